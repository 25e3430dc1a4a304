"""Behaviour: logits of the merged checkpoint against base + adapters applied in memory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from medmerge.errors import ModelError
from medmerge.loading import load_causal_lm
from medmerge.lora import Adapter, MethodParams, WeightPlan, all_touched, apply_merged_delta

PROBE_LENGTH = 16


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
    """Max |logit difference| and top-1 agreement on probe prompts.

    A merged folder that does not load faithfully (tensors missing or NaN: the loader refuses
    it) fails the check with an infinite difference and its reason under "load_error"; a base
    that does not load is the user's input error.
    """
    try:
        exported = load_causal_lm(merged, dtype="auto").eval()
    except ModelError as exc:
        return {"max_abs_diff": math.inf, "top1_agreement": 0.0, "load_error": str(exc)}
    ids = probe_ids(exported.config.vocab_size, prompts)
    got = exported(ids).logits.double()
    dtype = exported.dtype
    del exported
    model = load_causal_lm(base, dtype=dtype).eval()
    names = dict(model.named_parameters())
    unplaced = sorted(n for n in all_touched(adapters) if n not in names)
    if unplaced:  # e.g. per-expert MoE adapters on a model that loads its experts fused
        return {
            "skipped": f"the loaded model has no parameter {unplaced[0]!r} (and "
            f"{len(unplaced) - 1} more) that the adapters change — transformers loads this "
            "architecture in another layout (e.g. fused MoE experts); the tensor checks above "
            "still cover every merged tensor"
        }
    apply_merged_delta(model, adapters, plan, method, params)
    want = model(ids).logits.double()
    return {
        "max_abs_diff": float((got - want).abs().max()),
        "top1_agreement": float((got.argmax(-1) == want.argmax(-1)).double().mean()),
    }
