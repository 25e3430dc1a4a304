"""Behaviour: logits of the merged checkpoint against base + adapters applied in memory, with a
tolerance calibrated on the merge itself.

All three models run in fp32, so the comparison measures the weights, not bf16 arithmetic:
  got      the merged checkpoint, its weights upcast exactly;
  rounded  base + the merged delta rounded to the checkpoint's dtype (what it should hold);
  exact    base + the merged delta in fp32 (the adapted model, before the dtype rounds it).
The rounding gap max|exact - rounded| is how far the output dtype alone moves the logits; the
tolerance is twice that (and at least a few fp32 epsilons of the logits' scale). A top-1 flip
counts only where the reference's top-2 margin exceeds the tolerance: a near-tie may flip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from medmerge.architectures import architecture_of
from medmerge.errors import ModelError
from medmerge.loading import load_causal_lm
from medmerge.lora import (
    Adapter,
    MethodParams,
    WeightPlan,
    all_touched,
    apply_merged_delta,
    restore_weights,
)
from medmerge.lora.fit import place_adapter

PROBE_LENGTH = 16
GAP_FACTOR = 2.0
FP32_EPSILONS = 64  # fp32 arithmetic noise floor, in epsilons of the largest |logit|


def probe_ids(vocab_size: int, prompts: int, seed: int = 0) -> torch.Tensor:
    """Fixed random token ids: no tokenizer needed, the same for every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (prompts, PROBE_LENGTH), generator=generator)


@torch.no_grad()
def compare_logits(
    base: Path,
    merged: Path,
    adapters: Sequence[Adapter],
    plan: WeightPlan,
    method: str,
    params: MethodParams,
    prompts: int,
) -> dict[str, float | str]:
    """Max |logit difference|, the rounding gap and tolerance it is judged by, top-1 agreement
    and the flips outside near-ties, on probe prompts.

    A merged folder that does not load faithfully (tensors missing or NaN: the loader refuses
    it) fails the check with an infinite difference and its reason under "load_error"; a base
    that does not load is the user's input error.
    """
    try:
        exported = load_causal_lm(merged, dtype=torch.float32).eval()
    except ModelError as exc:
        return {"max_abs_diff": math.inf, "top1_agreement": 0.0, "load_error": str(exc)}
    stored = _stored_dtype(merged)
    ids = probe_ids(exported.config.vocab_size, prompts)
    got = exported(ids).logits.double()
    del exported
    model = load_causal_lm(base, dtype=torch.float32).eval()
    names = dict(model.named_parameters())
    shapes = {name: param.shape for name, param in names.items()}
    for adapter in adapters:  # the loaded model's names (hub GPT-2 keys load as transformer.*)
        place_adapter(adapter, shapes, architecture_of(model.config.to_dict()))
    views = fused_expert_views(names, [n for n in all_touched(adapters) if n not in names])
    unplaced = sorted(n for n in all_touched(adapters) if n not in names and n not in views)
    if unplaced:  # e.g. per-expert MoE adapters on a model that loads its experts fused
        return {
            "skipped": f"the loaded model has no parameter {unplaced[0]!r} (and "
            f"{len(unplaced) - 1} more) that the adapters change — transformers loads this "
            "architecture in another layout (e.g. fused MoE experts); the tensor checks above "
            "still cover every merged tensor"
        }
    originals = apply_merged_delta(model, adapters, plan, method, params, views=views)
    exact = model(ids).logits.double()
    restore_weights(model, originals, views)
    apply_merged_delta(model, adapters, plan, method, params, round_to=stored, views=views)
    rounded = model(ids).logits.double()
    return _judged(got, rounded, exact, stored)


_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def fused_expert_views(
    parameters: dict[str, torch.Tensor], names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per-expert tensor name -> its slice of the fused parameter transformers 5 loads MoE
    experts into: `experts.gate_up_proj[e]` holds gate_proj over up_proj, `experts.down_proj[e]`
    the down_proj; what matches no fused parameter of that layout is left out."""
    views = {}
    for name in names:
        match = _EXPERT.match(name)
        if match is None:
            continue
        prefix, expert, module = match.group(1), int(match.group(2)), match.group(3)
        fused_name = f"{prefix}.{'down_proj' if module == 'down_proj' else 'gate_up_proj'}"
        fused = parameters.get(fused_name)
        if fused is None or fused.dim() != 3 or expert >= fused.shape[0]:
            continue
        block = fused.detach()[expert]
        if module != "down_proj":
            half = block.shape[0] // 2
            block = block[:half] if module == "gate_proj" else block[half:]
        views[name] = block
    return views


def _judged(got, rounded, exact, stored: torch.dtype) -> dict[str, float | str]:
    gap = float((exact - rounded).abs().max())
    floor = FP32_EPSILONS * torch.finfo(torch.float32).eps * float(rounded.abs().max())
    tolerance = max(GAP_FACTOR * gap, floor)
    top2 = rounded.topk(2, dim=-1).values
    decided = (top2[..., 0] - top2[..., 1]) > tolerance
    agree = got.argmax(-1) == rounded.argmax(-1)
    return {
        "dtype": str(stored).removeprefix("torch."),
        "max_abs_diff": float((got - rounded).abs().max()),
        "rounding_gap": gap,
        "tolerance": tolerance,
        "top1_agreement": float(agree.double().mean()),
        "top1_flips_outside_ties": int((~agree & decided).sum()),
        "near_ties": int((~decided).sum()),
    }


def behaviour_failure(behaviour: dict) -> str | None:
    """The failure line for a behaviour record, or None when it passes."""
    if (
        behaviour["max_abs_diff"] <= behaviour["tolerance"]
        and not behaviour["top1_flips_outside_ties"]
    ):
        return None
    return (
        f"behaviour: logits differ from base + adapters in memory by up to "
        f"{behaviour['max_abs_diff']:.3g} where rounding to {behaviour['dtype']} explains "
        f"{behaviour['rounding_gap']:.3g} (tolerance {behaviour['tolerance']:.3g}); top-1 "
        f"agreement {behaviour['top1_agreement']:.0%}, "
        f"{behaviour['top1_flips_outside_ties']} flips outside near-ties"
    )


def _stored_dtype(folder: Path) -> torch.dtype:
    from medmerge.checkpoints import Checkpoint

    return Checkpoint(folder).stored_float_dtype()
