"""The intended delta of one base tensor, dense or as stacked factors, built here once for
merge, verification, adapter export, eval and sweeps.

delta(W) = method({d_i}, {w_i}) with d_i = s_i * B_i @ A_i for LoRA factors, s_i * b_i for
a LoRA bias, and M_i - W for a full module copy (modules_to_save). Linear: sum_i w_i * d_i.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from medmerge.checkpoints import Scratch
from medmerge.errors import MergeError
from medmerge.lora.adapters import Adapter, LoraFactors
from medmerge.lora.methods import MethodParams, get_method
from medmerge.lora.plan import WeightPlan


def adapter_deltas(
    name: str,
    adapters: Sequence[Adapter],
    base: torch.Tensor | None,
    dtype: torch.dtype = torch.float64,
) -> list[tuple[int, torch.Tensor]]:
    """(adapter index, dense delta in `dtype`) for each adapter that changes tensor `name`."""
    found = []
    for index, adapter in enumerate(adapters):
        delta = _one_delta(name, adapter, base, dtype)
        if delta is not None:
            found.append((index, delta))
    return found


def _one_delta(
    name: str, adapter: Adapter, base: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor | None:
    if name in adapter.factors:
        return adapter.factors[name].weight_delta(dtype)
    if name in adapter.full_copies:
        if base is None:
            raise ValueError(f"{name}: a full-copy delta needs the base tensor")
        return adapter.full_copies[name].to(dtype) - base.to(dtype)
    if name.endswith(".bias"):
        factors = adapter.factors.get(name[: -len(".bias")] + ".weight")
        if factors is not None and factors.bias is not None:
            return factors.bias.to(dtype) * factors.scale
    return None


def intended_delta(
    name: str,
    adapters: Sequence[Adapter],
    weights: Sequence[float] | WeightPlan,
    base: torch.Tensor | None = None,
    method: str = "linear",
    params: MethodParams | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor | None:
    """The merged delta of base tensor `name`, or None when no adapter touches it."""
    plan = weights if isinstance(weights, WeightPlan) else WeightPlan(tuple(weights))
    found = adapter_deltas(name, adapters, base, dtype)
    if not found:
        return None
    tensor_weights = plan.for_tensor(name)
    params = params or MethodParams()
    # Each tensor gets its own reproducible random stream for dare, whatever the order.
    params = MethodParams(
        density=params.density,
        seed=params.seed ^ zlib.crc32(name.encode()),
        owners=tuple(index for index, _ in found),
        adapters=len(adapters),
    )
    deltas = [delta for _, delta in found]
    chosen = [tensor_weights[index] for index, _ in found]
    return get_method(method)(deltas, chosen, params)


def merged_weight(
    name: str,
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    base: torch.Tensor,
    out_dtype: torch.dtype,
    method: str = "linear",
    params: MethodParams | None = None,
    scratch: Scratch | None = None,
) -> torch.Tensor:
    """round(W + delta) in `out_dtype`, rounded once from fp64.

    The result is one of `scratch`'s output buffers (give it back with `scratch.release` once
    written). A linear merge of LoRA factors is one fp64 matmul of the stacked factors
    (w_i * s_i folded into B_i) added onto W, a block of rows at a time (`exact_rows`).
    fp32 is not enough on its own: where W + delta nearly cancels, fp32's error in the delta
    is many ulps of the small result. A certified fp32 path (error bound, fp64 recompute near
    rounding boundaries) was costed from measured parts and is slower in eager torch on 2
    cores; see benchmarks/README.md.
    """
    scratch = scratch or Scratch()
    out = scratch.output(tuple(base.shape), out_dtype)
    factor_path = get_method(method).low_rank_exact and is_lora_only(name, adapters)
    if not factor_path or base.dim() != 2:
        return out.copy_(base.double() + intended_delta(name, adapters, plan, base, method, params))
    stacked = stacked_factors(name, adapters, plan)
    for rows, exact in exact_rows(base, stacked.A, stacked.B, stacked.transpose, scratch):
        out[rows].copy_(exact)
    return out


_BLOCK_BYTES = 4 << 20  # fp64 bytes of rows per step: passes over a block stay in cache


def exact_rows(
    base: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    transpose: bool,
    scratch: Scratch,
    role: str = "exact-rows",
) -> Iterator[tuple[slice, torch.Tensor]]:
    """(rows, W + B @ A on those rows in fp64), a block of about _BLOCK_BYTES at a time.

    With `transpose` the tensor is stored transposed and gets (B @ A).T = A.T @ B.T, the same
    products without a transposed copy. Each block lives in scratch's `role` buffer and is
    overwritten by the next one: memory traffic and fresh pages follow the block, not the
    tensor (an 8960x1536 tensor is 110 MB in fp64).
    """
    left, right = (A.T, B.T) if transpose else (B, A)  # W + left @ right
    rows, cols = base.shape
    step = exact_rows_step(cols)
    block = scratch.work(role, (min(step, rows), cols), torch.float64)
    for start in range(0, rows, step):
        stop = min(start + step, rows)
        exact = block[: stop - start].copy_(base[start:stop]).addmm_(left[start:stop], right)
        yield slice(start, stop), exact


def exact_rows_step(cols: int) -> int:
    """Rows per block of `exact_rows` for a tensor of `cols` columns. Row chunks that are a
    multiple of it are computed in the very blocks the whole tensor would be."""
    return max(1, _BLOCK_BYTES // (8 * cols))


def is_lora_only(name: str, adapters: Sequence[Adapter]) -> bool:
    """True when only LoRA factors change tensor `name` (no full copy, no LoRA bias)."""
    if name.endswith(".bias") or any(name in a.full_copies for a in adapters):
        return False
    return any(name in a.factors for a in adapters)


@dataclass(frozen=True)
class StackedFactors:
    """The LoRA factors of every adapter touching one tensor, side by side.

    A = [A_1; A_2; ...] and B = [w_1 s_1 B_1, w_2 s_2 B_2, ...] in fp64, so B @ A is
    sum_i w_i s_i B_i @ A_i (transposed when `transpose`: Conv1D, fan_in_fan_out, embedding).
    `parts` keeps each adapter's (index, weight, factors) for checks that need them apart;
    `unweighted` each part's s_i B_i in fp64 when asked for, made from the same reads.
    """

    A: torch.Tensor
    B: torch.Tensor
    transpose: bool
    embedding: bool
    bias: torch.Tensor | None  # sum_i w_i s_i b_i, the module bias's change
    parts: tuple[tuple[int, float, LoraFactors], ...]
    unweighted: tuple[torch.Tensor, ...] = ()  # s_i B_i per part, fp64, when kept

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) restricted to the rows start..stop of the stored tensor, for `exact_rows`
        on those rows alone (B's rows, or A's columns when the tensor is stored transposed)."""
        if self.transpose:
            return self.A[:, start:stop], self.B
        return self.A, self.B[start:stop]

    def scaled(self) -> list[tuple[int, float, torch.Tensor, torch.Tensor]]:
        """(adapter index, weight, s_i B_i, A_i) in fp64 per adapter, B and A swapped when the
        tensor is stored transposed (then d_i = (s_i B_i A_i)^T = A_i^T (s_i B_i)^T). Needs
        the factors stacked with `unweighted`."""
        found, start = [], 0
        for (index, weight, factors), B in zip(self.parts, self.unweighted, strict=True):
            stop = start + factors.rank
            A = self.A[start:stop]  # the stacked copy of A_i, in fp64 already
            found.append((index, weight, *((A.T, B.T) if self.transpose else (B, A))))
            start = stop
        return found


FactorParts = tuple[tuple[int, float, LoraFactors], ...]  # (adapter index, weight, factors)


def factor_parts(name: str, adapters: Sequence[Adapter], plan: WeightPlan) -> FactorParts:
    """Each adapter's LoRA factors for base tensor `name`, with its weight there."""
    weights = plan.for_tensor(name)
    return tuple(
        (i, weights[i], a.factors[name]) for i, a in enumerate(adapters) if name in a.factors
    )


def stacked_factors(
    name: str,
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    unweighted: bool = False,
    parts: FactorParts | None = None,
    scratch: Scratch | None = None,
) -> StackedFactors:
    """The stacked factors of base tensor `name` (some adapter must have LoRA factors for it);
    with `unweighted`, also each part's s_i B_i (verify's fit needs the deltas apart), so
    every factor is read from its adapter file once. `parts`: `factor_parts`, read already.
    With `scratch` the fp64 factors live in its buffers (no fresh pages per module, which
    this VM faults in one by one) until the next call with it."""
    parts = factor_parts(name, adapters, plan) if parts is None else parts
    rank = sum(f.rank for _, _, f in parts)

    def fresh(role: str, shape: tuple[int, ...]) -> torch.Tensor:
        if scratch is None:
            return torch.empty(shape, dtype=torch.float64)
        return scratch.work(role, shape, torch.float64)

    # Filled in place, one adapter's factors read at a time: no fp64 temporaries per part.
    A = fresh("factors-A", (rank, parts[0][2].in_features))
    B = fresh("factors-B", (parts[0][2].out_features, rank))
    scaled: list[torch.Tensor] = []
    start = 0
    for k, (_, weight, factors) in enumerate(parts):
        stop = start + factors.rank
        A[start:stop].copy_(factors.A)
        B_i = factors.B
        B[:, start:stop].copy_(B_i).mul_(weight * factors.scale)
        if unweighted:
            scaled.append(fresh(f"factors-B{k}", tuple(B_i.shape)).copy_(B_i).mul_(factors.scale))
        start = stop
    biases = [f.bias.double() * (w * f.scale) for _, w, f in parts if f.has_bias]
    first = parts[0][2]
    return StackedFactors(
        A=A,
        B=B,
        transpose=first.transpose,
        embedding=first.embedding,
        bias=torch.stack(biases).sum(0) if biases else None,
        parts=parts,
        unweighted=tuple(scaled),
    )


def factors_ahead(
    names: Sequence[str],
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    reader,
    unweighted: bool = False,
    scratch: Scratch | None = None,
) -> Iterator[StackedFactors]:
    """Each of `names`' stacked factors in order, the next tensor's factors read from the
    adapter files on `reader` (an executor) while the caller works on this one. With
    `scratch`, each is valid until the next is asked for (`stacked_factors`).

    The reader only reads; stacking them (fp64 copies, which torch spreads over every core)
    is left to the caller's thread: two threads each running torch's parallel loops on two
    cores made a 1.78 B merge 1 s slower (6.4-6.7 s against 5.5-5.7 s, warm, in process)."""

    def read(index: int) -> FactorParts:
        parts = factor_parts(names[index], adapters, plan)
        return tuple((i, weight, factors.loaded()) for i, weight, factors in parts)

    pending = reader.submit(read, 0) if names else None
    for index, name in enumerate(names):
        parts = pending.result()
        pending = reader.submit(read, index + 1) if index + 1 < len(names) else None
        yield stacked_factors(name, adapters, plan, unweighted, parts, scratch)


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no element is NaN or Inf (one reduction; isfinite is several times slower)."""
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    if tensor.element_size() == 1:  # fp8: no aminmax kernel; every fp8 value is an fp32 one
        tensor = tensor.float()
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def all_touched(adapters: Sequence[Adapter]) -> set[str]:
    """Every base tensor name some adapter changes."""
    return set().union(*(adapter.touched() for adapter in adapters))


@torch.no_grad()
def apply_merged_delta(
    model: torch.nn.Module,
    adapters: Sequence[Adapter],
    weights: Sequence[float] | WeightPlan,
    method: str = "linear",
    params: MethodParams | None = None,
    round_to: torch.dtype | None = None,
    views: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Add the merged delta to a loaded model's weights in place, exactly as the export does.

    `round_to` rounds each merged tensor to that dtype before it is stored in the parameter's
    own (an fp32 model holding exactly the weights of a bf16 merge); default: the parameter's.
    `views` name tensors the model holds inside a fused parameter (one MoE expert's slice).
    Returns the original tensors; pass them to `restore_weights` to undo the change exactly.
    """
    plan = weights if isinstance(weights, WeightPlan) else WeightPlan(tuple(weights))
    parameters = {**dict(model.named_parameters()), **(views or {})}
    originals: dict[str, torch.Tensor] = {}
    scratch = Scratch()
    for name in sorted(all_touched(adapters)):
        if name not in parameters:
            raise MergeError(
                f"{name}: the adapters change a tensor the loaded model has no parameter of; "
                "merge onto the base the adapters were trained on"
            )
        param = parameters[name]
        base = param.detach().cpu()
        originals[name] = param.detach().clone()
        dtype = round_to or param.dtype
        merged = merged_weight(name, adapters, plan, base, dtype, method, params, scratch)
        param.copy_(merged)
        scratch.release(merged)
    return originals


@torch.no_grad()
def restore_weights(
    model: torch.nn.Module,
    originals: dict[str, torch.Tensor],
    views: dict[str, torch.Tensor] | None = None,
) -> None:
    """Put back the tensors `apply_merged_delta` changed, bit for bit."""
    parameters = {**dict(model.named_parameters()), **(views or {})}
    for name, tensor in originals.items():
        parameters[name].copy_(tensor)
