"""Behaviour: logits of the merged checkpoint against base + adapters applied in memory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from medmerge.merge.adapters import Adapter
from medmerge.merge.delta import WeightPlan, apply_merged_delta
from medmerge.merge.methods import MethodParams

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
) -> dict[str, float]:
    """Max |logit difference| and top-1 agreement on probe prompts."""
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(merged, dtype="auto").eval()
    ids = probe_ids(exported.config.vocab_size, prompts)
    got = exported(ids).logits.double()
    dtype = exported.dtype
    del exported
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype).eval()
    apply_merged_delta(model, adapters, plan, method, params)
    want = model(ids).logits.double()
    return {
        "max_abs_diff": float((got - want).abs().max()),
        "top1_agreement": float((got.argmax(-1) == want.argmax(-1)).double().mean()),
    }
