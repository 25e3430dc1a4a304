"""Tensor checks, streamed one tensor at a time through both checkpoints (no sampling by default)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from medmerge.checkpoints import Checkpoint, Scratch, output_dtype
from medmerge.lora import (
    Adapter,
    MethodParams,
    StackedFactors,
    WeightPlan,
    adapter_deltas,
    all_finite,
    all_touched,
    get_method,
    intended_delta,
    stacked_factors,
)
from medmerge.lora.delta import exact_rows, is_lora_only

RETAINED_WARN = 0.9  # an exact merge keeping less of its delta than this gets a warning


@dataclass
class TensorResult:
    name: str
    touched: bool
    max_ulp: int = 0
    over_one_ulp: int = 0
    delta_rel_error: float = 0.0
    retention: float = 1.0
    recovered: list[float | None] = field(default_factory=list)
    problem: str | None = None
    finite: bool | None = None  # True once the check has shown W' holds no NaN or Inf


@dataclass
class FitSums:
    """Sums for a least-squares fit of D = W' - W onto the adapters' unweighted deltas d_i."""

    gram: torch.Tensor
    rhs: torch.Tensor
    energy: float = 0.0  # ||D||^2
    noise: float = 0.0  # ||round(W + I) - (W + I)||^2: what rounding alone leaves unexplained

    @classmethod
    def empty(cls, count: int) -> FitSums:
        return cls(
            torch.zeros(count, count, dtype=torch.float64), torch.zeros(count, dtype=torch.float64)
        )

    def add(self, deltas: list[tuple[int, torch.Tensor]], change: torch.Tensor) -> None:
        for i, di in deltas:
            self.rhs[i] += (di * change).sum()
            for j, dj in deltas:
                self.gram[i, j] += (di * dj).sum()
        self.energy += float((change * change).sum())


ULP_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def ulp_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise distance in units in the last place between two tensors of one float dtype."""
    ints, bits = {
        torch.bfloat16: (torch.int16, 16),
        torch.float16: (torch.int16, 16),
        torch.float32: (torch.int32, 32),
        torch.float64: (torch.int64, 64),
    }[a.dtype]
    magnitude = (1 << (bits - 1)) - 1

    def line(x: torch.Tensor) -> torch.Tensor:
        raw = x.contiguous().view(ints).long()
        return torch.where(raw < 0, -(raw & magnitude), raw)

    return (line(a) - line(b)).abs()


def check_touched(
    name: str,
    base: torch.Tensor,
    merged: torch.Tensor,
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    method: str,
    params: MethodParams,
    fit: FitSums,
    scratch: Scratch | None = None,
    factors: StackedFactors | None = None,
) -> TensorResult:
    """W' against round(W + intended delta), the effective delta, its retention, its weights.
    `factors`: this tensor's stacked factors with their unweighted parts, when read ahead."""
    if merged.dtype not in ULP_DTYPES:
        problem = (
            f"{name}: stored as {_dtype_name(merged.dtype)}; a merged tensor must be bf16, fp16, "
            "fp32 or fp64 (verify measures it in ulps of one of them)"
        )
        return TensorResult(name, True, problem=problem)
    if checked_by_factors(name, adapters, method):
        if factors is None:
            factors = stacked_factors(name, adapters, plan, unweighted=True)
        return _check_lora(name, base, merged, factors, fit, scratch or Scratch())
    w = base.double()
    deltas = adapter_deltas(name, adapters, base)
    intended = intended_delta(name, adapters, plan, base, method, params)
    exact = w + intended
    reference = exact.to(merged.dtype)
    ulps = ulp_error(merged, reference)
    change = merged.double() - w
    norm2 = float((intended * intended).sum())
    result = TensorResult(name, True, int(ulps.max()), int((ulps > 1).sum()))
    if not all_finite(change):  # W' holds NaN or Inf (run.py names it): no fit from it
        return _unfitted(result, len(adapters), merged.dtype)
    result.finite = True  # W' - W is finite only where W' is
    result.delta_rel_error = float((change - intended).norm()) / max(norm2**0.5, 1e-300)
    result.retention = float((change * intended).sum()) / norm2 if norm2 > 0 else 1.0
    result.recovered = _tensor_fit(deltas, change, len(adapters))
    fit.add(deltas, change)
    fit.noise += float(((reference.double() - exact) ** 2).sum())
    result.problem = _tensor_problem(result, merged.dtype)
    return result


def checked_by_factors(name: str, adapters: Sequence[Adapter], method: str) -> bool:
    """True when tensor `name` is checked from its stacked factors (`_check_lora`), so the
    caller can read them ahead."""
    return get_method(method).recompute == "factors" and is_lora_only(name, adapters)


def _check_lora(
    name: str,
    base: torch.Tensor,
    merged: torch.Tensor,
    factors: StackedFactors,
    fit: FitSums,
    scratch: Scratch,
) -> TensorResult:
    """The linear LoRA case without a dense delta per adapter, a block of rows at a time.

    x = W + sum_i w_i d_i is made in fp64 (as the merge makes it) and rounded for the ulp
    check; everything else is inner products. With r = W' - x and d_i = s_i B_i A_i:
    <d_i, d_j> = s_i s_j sum((B_i^T B_j) * (A_i A_j^T)) from the small factors, and
    <d_i, W' - W> = sum_j w_j <d_i, d_j> + <d_i, r>, where <d_i, r> = s_i sum((B_i^T r) * A_i).
    B_i^T r is summed over blocks of rows small enough that every pass over a block stays
    in cache (the whole tensor in fp64 does not).

    One adapter's <d_k, r> needs no projection: sum_i w_i <d_i, r> = <x - W, r>, which is
    -||r||^2 - <W' - W, x - W'>, one dot per block, and <d_k, r> follows by dividing by
    w_k. The adapter left out is the one with the largest |w_k| * rank_k (`_derived_part`);
    with one adapter no projection is made at all.
    """
    parts = factors.scaled()  # x = W + factors.B @ factors.A (or its transpose)
    derived = _derived_part(parts)
    projected = [k for k in range(len(parts)) if k != derived]
    stacked = None  # rows x the projected ranks, fp32
    if projected:
        stacked = torch.cat([parts[k][2] for k in projected], dim=1).float()
    sums = _residual_sums(base, merged, factors, stacked, scratch)
    gram = torch.zeros(len(parts), len(parts), dtype=torch.float64)
    for k, (_, _, Bk, Ak) in enumerate(parts):
        for m, (_, _, Bm, Am) in enumerate(parts[: k + 1]):  # symmetric
            gram[k, m] = gram[m, k] = ((Bk.T @ Bm) * (Ak @ Am.T)).sum()
    weights = torch.tensor([w for _, w, _, _ in parts], dtype=torch.float64)
    rhs_noise = torch.zeros(len(parts), dtype=torch.float64)
    start = 0
    for k in projected:  # <d_k, r> = -s_k sum((B_k^T (x - W')) * A_k), s_k inside B_k
        Ak = parts[k][3]
        rows = sums.projected[start : start + Ak.shape[0]]
        rhs_noise[k] = -float((rows.double() * Ak).sum())
        start += Ak.shape[0]
    if derived is not None:  # sum_i w_i <d_i, r> = <x - W, W' - x>
        total = -(sums.error2 + sums.change_dot)
        rhs_noise[derived] = (total - float(weights @ rhs_noise)) / float(weights[derived])
    result = TensorResult(name, True, sums.max_ulp, sums.over_one_ulp)
    rhs = gram @ weights + rhs_noise
    # x - W' is NaN or Inf wherever W' is, so a finite ||x - W'||^2 shows W' finite; a
    # non-finite one (or a residual too large for fp32) gives no fit, and W' is scanned
    if not (math.isfinite(sums.error2) and bool(torch.isfinite(rhs).all())):
        return _unfitted(result, len(fit.rhs), merged.dtype)
    result.finite = True
    intended2 = float(weights @ gram @ weights)
    result.delta_rel_error = sums.error2**0.5 / max(intended2**0.5, 1e-300)
    result.retention = float(weights @ rhs) / intended2 if intended2 > 0 else 1.0
    solution = torch.linalg.lstsq(gram, rhs[:, None]).solution[:, 0]
    result.recovered = [None] * len(fit.rhs)
    for k, (i, _, _, _) in enumerate(parts):
        result.recovered[i] = float(solution[k])
        fit.rhs[i] += rhs[k]
        for m, (j, _, _, _) in enumerate(parts):
            fit.gram[i, j] += gram[k, m]
    fit.energy += intended2 + 2 * float(weights @ rhs_noise) + sums.error2
    fit.noise += sums.noise
    result.problem = _tensor_problem(result, merged.dtype)
    return result


def _derived_part(parts: list[tuple[int, float, torch.Tensor, torch.Tensor]]) -> int | None:
    """The part whose <d_k, r> comes from <x - W, W' - x> instead of a projection: the
    largest |w_k| * rank_k, so a large projection is left out and a small weight (which
    divides the dot's rounding error) is not chosen over a comparable one; None when every
    weight is 0."""
    cost = [abs(weight) * A.shape[0] for _, weight, _, A in parts]
    best = max(range(len(parts)), key=cost.__getitem__)
    return best if cost[best] > 0 else None


def _unfitted(result: TensorResult, count: int, dtype: torch.dtype) -> TensorResult:
    """A tensor whose W' - W is not finite: no delta error, retention or weights from it."""
    result.delta_rel_error = math.inf
    result.recovered = [None] * count
    result.problem = _tensor_problem(result, dtype)
    return result


@dataclass
class _ResidualSums:
    max_ulp: int = 0
    over_one_ulp: int = 0
    error2: float = 0.0  # ||x - W'||^2
    noise: float = 0.0  # ||round(x) - x||^2: what rounding alone leaves
    change_dot: float = 0.0  # <W' - W, x - W'>
    projected: torch.Tensor | None = None  # stacked^T (x - W'), fp32


def _residual_sums(
    base: torch.Tensor,
    merged: torch.Tensor,
    factors: StackedFactors,
    stacked: torch.Tensor | None,
    scratch: Scratch,
) -> _ResidualSums:
    """One pass over the rows of W and W': ulps against round(x), ||x - W'||^2, rounding noise,
    <W' - W, x - W'> and stacked^T (x - W') (fp32: x - W' is rounding noise or a merge
    mistake, and fp32's relative error in it, under 1e-4, is immaterial to the fit and the
    retention; W' - W is exact in fp32 for bf16 and fp16 W and W')."""
    ranks = 0 if stacked is None else stacked.shape[1]
    sums = _ResidualSums(projected=torch.zeros(ranks, base.shape[1]))
    exact = exact_rows(base, factors.A, factors.B, factors.transpose, scratch, "verify-exact")
    for rows, x in exact:
        shape = tuple(x.shape)
        x32 = None  # x in fp32, for every W' dtype but fp64
        if merged.dtype != torch.float64:
            x32 = scratch.work("verify-x32", shape, torch.float32).copy_(x)
        reference = _rounded(x, x32, merged.dtype, scratch)
        got = merged[rows]
        same = same_bits(reference, got)  # bits: -0.0 against 0.0 takes the ulp path, also 0
        if not same:
            ulps = ulp_error(got, reference)
            sums.max_ulp = max(sums.max_ulp, int(ulps.max()))
            sums.over_one_ulp += int((ulps > 1).sum())
            noise = scratch.work("verify-spare", shape, torch.float64).copy_(reference).sub_(x)
            noise = noise.view(-1)
            sums.noise += float(noise @ noise)
        residual, change = _residual32(x, x32, got, base[rows], scratch)
        flat = residual.view(-1)
        error2 = float(flat @ flat)
        sums.error2 += error2
        if same:  # W' == round(x) here: its distance from x is the rounding noise
            sums.noise += error2
        sums.change_dot += float(change.view(-1) @ flat)
        if stacked is not None:
            sums.projected.addmm_(stacked[rows].T, residual)
    return sums


def _rounded(
    x: torch.Tensor, x32: torch.Tensor | None, dtype: torch.dtype, scratch: Scratch
) -> torch.Tensor:
    """round(x) in `dtype`, as the merge's x.to(dtype) gives it. torch converts fp64 to bf16
    and fp16 through fp32 (tests/verify/test_rounding.py pins it), so rounding `x32`, x
    already in fp32, gives the same bits from a pass over half the bytes."""
    if dtype == torch.float64:
        return x
    if dtype == torch.float32:
        return x32
    return scratch.work("verify-rounded", tuple(x.shape), dtype).copy_(x32)


def _residual32(
    x: torch.Tensor,
    x32: torch.Tensor | None,
    got: torch.Tensor,
    base: torch.Tensor,
    scratch: Scratch,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x - W', W' - W) in fp32, for the rows `got` of W' and `base` of W.

    For a bf16 or fp16 W' (values fp32 holds) x - W' is x32 - W', in place in x32 (fp32(x),
    which rounding needed anyway), whose error is x's rounding to fp32, 2^-24 |x|: under
    1e-4 of a residual of half an ulp (2^-9 |x| in bf16, 2^-12 in fp16). That is same-dtype
    passes instead of a mixed-dtype fp64 subtraction at a fifth of their speed. W' - W is
    then made in place in W''s fp32 copy, exact for a bf16 or fp16 W (two close fp32
    values). An fp32 or fp64 W' is subtracted in fp64 (its residual is as small as x's
    rounding to fp32)."""
    shape = tuple(x.shape)
    if got.dtype in (torch.float32, torch.float64):
        change = scratch.work("verify-change", shape, torch.float64).copy_(got).sub_(base)
        residual = scratch.work("verify-residual32", shape, torch.float32).copy_(x.sub_(got))
        return residual, scratch.work("verify-change32", shape, torch.float32).copy_(change)
    merged32 = scratch.work("verify-merged32", shape, torch.float32).copy_(got)
    residual = x32.sub_(merged32)
    return residual, merged32.sub_(scratch.work("verify-base32", shape, torch.float32).copy_(base))


def _tensor_fit(
    deltas: list[tuple[int, torch.Tensor]], change: torch.Tensor, count: int
) -> list[float | None]:
    local = FitSums.empty(len(deltas))
    local.add([(k, d) for k, (_, d) in enumerate(deltas)], change)
    solution = torch.linalg.lstsq(local.gram, local.rhs[:, None]).solution[:, 0]
    recovered: list[float | None] = [None] * count
    for k, (i, _) in enumerate(deltas):
        recovered[i] = float(solution[k])
    return recovered


def _tensor_problem(result: TensorResult, dtype: torch.dtype) -> str | None:
    if result.over_one_ulp:
        return (
            f"{result.name}: {result.over_one_ulp} elements more than 1 ulp from round(W + delta) "
            f"(max {result.max_ulp} ulp)"
        )
    return None


def erasure_warnings(results: Sequence[TensorResult], dtype: torch.dtype) -> list[str]:
    """One line when the output dtype rounded part of an exact merge's delta away: the merge is
    what was asked, but the served model carries only the retained share of the adapters."""
    touched = [r for r in results if r.touched]
    erased = [r for r in touched if r.retention < RETAINED_WARN]
    if not erased:
        return []
    worst = min(erased, key=lambda r: r.retention)
    name = str(dtype).removeprefix("torch.")
    return [
        f"{name} rounding keeps only part of the adapters' delta: {len(erased)} of "
        f"{len(touched)} touched tensors retain less than {RETAINED_WARN:.0%} (least: "
        f"{worst.retention:.1%} in {worst.name}); the merge is exact for {name}, to keep the "
        "whole delta merge with --dtype fp32 or serve the adapters unmerged"
    ]


_BIT_VIEWS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's elements as raw integers of the same width, flat."""
    return tensor.reshape(-1).view(_BIT_VIEWS[tensor.element_size()])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Byte-identical: same dtype, same shape, same bit patterns (NaN payloads and -0.0
    included, which torch.equal would compare as numbers).

    Compared as the widest integers both tensors' bytes divide into: torch.equal runs element
    by element, and on 4 MB of bf16 it took 2.7 ms as int16 and 0.29 ms as int64."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a, flat_b = a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
    for width in (torch.int64, torch.int32):
        if _aligned(flat_a, width) and _aligned(flat_b, width):
            return torch.equal(flat_a.view(width), flat_b.view(width))
    return torch.equal(_bits(a), _bits(b))


def _aligned(flat: torch.Tensor, width: torch.dtype) -> bool:
    """True when the flat byte tensor can be viewed as `width` integers (whole words, and a
    start on a word boundary of its storage)."""
    return flat.numel() % width.itemsize == 0 and flat.storage_offset() % width.itemsize == 0


def check_untouched(
    name: str, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[TensorResult, bool]:
    """A tensor no adapter touches must equal the base byte for byte in the dtype merge gives
    it: its own, or the output dtype when the whole model was converted (dtype_problems checks
    which). A converted one must be the base rounded once to that dtype.

    `chunks` are (base, merged) pieces of the tensor, the same elements of each, so memory
    follows the piece, not the tensor (an embedding is hundreds of MB). Returns the result
    and whether every merged element is finite."""
    changed, finite = 0, True
    for base, merged in chunks:
        expected = base if base.dtype == merged.dtype else base.to(merged.dtype)
        if not same_bits(expected, merged):
            changed += int((_bits(expected) != _bits(merged)).sum())
        finite = finite and all_finite(merged)
    problem = None
    if changed:
        problem = f"{name}: changed ({changed} elements) although no adapter touches it"
    return TensorResult(name, False, problem=problem), finite


def dtype_problems(base: Checkpoint, merged: Checkpoint) -> list[str]:
    """Each merged tensor in the dtype merge stores it in: the merged model's main float dtype
    for a tensor in the base's main float dtype, its own dtype for any other
    (`checkpoints.output_dtype`)."""
    base_main, merged_main = base.stored_float_dtype(), merged.stored_float_dtype()
    problems = []
    for name in sorted(set(base.entries) & set(merged.entries)):
        stored = base.entries[name].torch_dtype
        want = output_dtype(stored, base_main, merged_main)
        got = merged.entries[name].torch_dtype
        if got != want and stored == base_main:
            problems.append(
                f"{name}: stored as {_dtype_name(got)} while the model's other "
                f"{_dtype_name(stored)} tensors became {_dtype_name(merged_main)}; a merge "
                "converts all of them to the output dtype"
            )
        elif got != want:
            problems.append(
                f"{name}: stored as {_dtype_name(got)} but the base stores it as "
                f"{_dtype_name(stored)} beside {_dtype_name(base_main)} weights; a tensor in "
                "another dtype than the model's main one keeps its own, bit for bit"
            )
    return problems


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def structure_problems(base: Checkpoint, merged: Checkpoint) -> list[str]:
    """Same tensor names and shapes as the base."""
    problems = [
        f"{n}: missing from the merged checkpoint"
        for n in sorted(set(base.entries) - set(merged.entries))
    ]
    problems += [
        f"{n}: in the merged checkpoint but not in the base"
        for n in sorted(set(merged.entries) - set(base.entries))
    ]
    for name in sorted(set(base.entries) & set(merged.entries)):
        if base.entries[name].shape != merged.entries[name].shape:
            problems.append(
                f"{name}: shape {merged.entries[name].shape}, base has {base.entries[name].shape}"
            )
    return problems


def names_to_check(
    base: Checkpoint, merged: Checkpoint, adapters: Sequence[Adapter], sample: int | None
):
    """(name, touched) in merged-file order; `sample` keeps that many of each kind, evenly spread."""
    touched = all_touched(adapters)
    names = [
        n
        for n in merged.entries
        if n in base.entries and base.entries[n].shape == merged.entries[n].shape
    ]
    if sample is None:
        return [(n, n in touched) for n in names]
    chosen = []
    for kind in (True, False):
        group = [n for n in names if (n in touched) == kind]
        step = max(len(group) / sample, 1)
        chosen += [(group[int(k * step)], kind) for k in range(min(sample, len(group)))]
    return chosen
