"""Export the weighted merge as one PEFT LoRA adapter whose delta is exactly sum_i w_i*s_i*B_i@A_i.

Per module: A' = [A_1; A_2; ...], B' = [w_1 s_1 B_1, w_2 s_2 B_2, ...], scale 1 (alpha = r, no
rsLoRA, no DoRA). Optionally recompressed exactly to the delta's true rank (QR of the stacked
factors, SVD of the small core) or truncated to a given rank with the dropped energy reported.
Every module gets the same rank (zero-padded), so stock PEFT and vLLM load it without a
rank_pattern.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from medmerge.checkpoints import Checkpoint
from medmerge.lora import Adapter, WeightPlan, adapter_deltas, stacked_factors

_PREFIX = "base_model.model."


@dataclass
class ModuleFactors:
    A: torch.Tensor  # (r, in) in fp64
    B: torch.Tensor  # (out, r) in fp64, scale folded in
    embedding: bool
    bias: torch.Tensor | None = None


def recompress(factors: ModuleFactors, rank: int | str) -> tuple[ModuleFactors, float]:
    """Exact re-factorisation of B @ A at its true rank ('auto') or truncated to `rank`.

    Returns the new factors and the fraction of the delta's energy (squared Frobenius norm)
    dropped, 0 for 'auto' up to round-off.
    """
    qb, rb = torch.linalg.qr(factors.B)
    qa, ra = torch.linalg.qr(factors.A.T)
    u, s, vh = torch.linalg.svd(rb @ ra.T)
    if rank == "auto":
        tolerance = s.max().clamp(min=1e-300) * max(factors.B.shape[0], factors.A.shape[1]) * 1e-15
        keep = int((s > tolerance).sum())
    else:
        keep = min(int(rank), s.numel())
    energy = float((s[keep:] ** 2).sum() / (s**2).sum().clamp(min=1e-300))
    root = s[:keep].sqrt()
    B = (qb @ u[:, :keep]) * root
    A = root[:, None] * (vh[:keep] @ qa.T)
    return ModuleFactors(A, B, factors.embedding, factors.bias), energy


def export_adapter(
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    base: Checkpoint,
    out: Path,
    rank: int | str | None,
) -> dict[str, object]:
    """Write adapter_config.json + adapter_model.safetensors; return a small report."""
    from safetensors.torch import save_file

    modules: dict[str, ModuleFactors] = {}
    dropped: dict[str, float] = {}
    names = sorted(set().union(*(a.factors for a in adapters)))
    for name in names:
        stacked = stacked_factors(name, adapters, plan)
        modules[name] = ModuleFactors(stacked.A, stacked.B, stacked.embedding, stacked.bias)
        if rank is not None:
            modules[name], dropped[name] = recompress(modules[name], rank)
    targets = {name[: -len(".weight")].rsplit(".", 1)[-1] for name in names}
    _fill_untargeted(modules, targets, base, bool(adapters[0].config.get("fan_in_fan_out")))
    width = max(max(m.A.shape[0] for m in modules.values()), 1)
    state = _state_dict(modules, width, any(m.bias is not None for m in modules.values()))
    full = _full_copies(adapters, plan, base)
    state.update({_PREFIX + name: tensor for name, tensor in full.items()})
    save_file(
        {k: v.contiguous() for k, v in state.items()},
        str(out / "adapter_model.safetensors"),
        {"format": "pt"},
    )
    _write_config(adapters, base, out, width, targets, state, full)
    return {
        "rank": width,
        "max_dropped_energy": max(dropped.values(), default=0.0),
        "dropped_energy": dropped,
    }


def _fill_untargeted(
    modules: dict[str, ModuleFactors], targets: set[str], base: Checkpoint, fan_in_fan_out: bool
) -> None:
    """Zero factors for base modules the target names match but no adapter changes (exact: delta 0)."""
    embedding_names = {n.split(".")[-2] for n, m in modules.items() if m.embedding}
    for name, entry in base.entries.items():
        parts = name.split(".")
        if (
            name in modules
            or len(entry.shape) != 2
            or parts[-1] != "weight"
            or parts[-2] not in targets
        ):
            continue
        out_features, in_features = entry.shape
        # Which modules are embeddings is known only from the adapters; a zero factor for an
        # untargeted embedding is never needed because PEFT matches it by the same short name.
        embedding = parts[-2] in embedding_names
        if embedding or fan_in_fan_out:
            out_features, in_features = in_features, out_features
        modules[name] = ModuleFactors(
            torch.zeros(0, in_features, dtype=torch.float64),
            torch.zeros(out_features, 0, dtype=torch.float64),
            embedding,
        )


def _state_dict(
    modules: dict[str, ModuleFactors], width: int, with_bias: bool
) -> dict[str, torch.Tensor]:
    state = {}
    for name, factors in modules.items():
        module = _PREFIX + name[: -len(".weight")]
        pad = width - factors.A.shape[0]
        A = torch.nn.functional.pad(factors.A, (0, 0, 0, pad)).float()
        B = torch.nn.functional.pad(factors.B, (0, pad)).float()
        if factors.embedding:
            state[f"{module}.lora_embedding_A"], state[f"{module}.lora_embedding_B"] = A, B
            continue
        state[f"{module}.lora_A.weight"], state[f"{module}.lora_B.weight"] = A, B
        if with_bias:
            bias = (
                factors.bias
                if factors.bias is not None
                else torch.zeros(B.shape[0], dtype=torch.float64)
            )
            state[f"{module}.lora_B.bias"] = bias.float()
    return state


def _full_copies(
    adapters: Sequence[Adapter], plan: WeightPlan, base: Checkpoint
) -> dict[str, torch.Tensor]:
    """modules_to_save: W + sum_i w_i (M_i - W), rounded once to the base's dtype."""
    names = sorted(set().union(*(a.full_copies for a in adapters)))
    copies = {}
    for name in names:
        weight = base.read(name)
        weights = plan.for_tensor(name)
        delta = sum(weights[i] * d for i, d in adapter_deltas(name, adapters, weight))
        copies[name] = (weight.double() + delta).to(weight.dtype)
    return copies


def _write_config(adapters, base, out, width, targets, state, full) -> None:
    from peft import LoraConfig

    first = adapters[0].config
    config = LoraConfig(
        r=width,
        lora_alpha=width,
        target_modules=sorted(targets),
        modules_to_save=sorted({n[: -len(".weight")] for n in full}) or None,
        lora_bias=any(k.endswith("lora_B.bias") for k in state),
        fan_in_fan_out=bool(first.get("fan_in_fan_out")),
        use_rslora=False,
        use_dora=False,
        lora_dropout=0.0,
        task_type=first.get("task_type"),
        base_model_name_or_path=str(base.folder),
    )
    config.save_pretrained(str(out))
