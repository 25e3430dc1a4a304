"""The logit shift's closed form (every shift from one forward) equals a hooked forward per
shift, and a model that changes its logits after the output layer falls back to the hook."""

from __future__ import annotations

import contextlib

import pytest
import torch

from medmerge.data.templates import get_template
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import ModelSpec
from medmerge.eval.mcq import FORMATS, McqTask, score_loglik
from medmerge.mechanism import shifted_scoring
from medmerge.mechanism.intervene import fold_hits
from medmerge.mechanism.interventions import random_directions, shift_final_state
from medmerge.mechanism.shifted_scoring import (
    capture_states,
    continuation_end_states,
    option_requests,
    shifted_hits,
    shifted_loglikelihoods,
)
from medmerge.sweep.config import McqSuite
from medmerge.sweep.evaluate import load_mcq_suite


@pytest.fixture(scope="module")
def setup(tiny_base, repo):
    hf = HFBackend(ModelSpec(base=str(tiny_base)), device="cpu", dtype="fp32", batch_size=4)
    suite = McqSuite(
        name="hq",
        data=[str(repo / "data/mcq_en/dev_HEAD_EN.json")],
        include_ids=["Cuaderno_2015_1_M"],
        limit=24,
        continuation="text",
    )
    loaded = load_mcq_suite(suite)
    task = McqTask(FORMATS["en"], get_template("qwen3"), hf.tokenizer, False, continuation="text")
    return hf, task, loaded.items


def hooked(hf, task, items, shift):
    """The reference: a forward per shift with the hook on the output layer."""
    block = shift_final_state(hf.model, *shift) if shift else torch.no_grad()
    with block:
        records = score_loglik(task, items, [[] for _ in items], hf)
    return [r["loglikelihoods"] for r in records], [bool(r["correct"]) for r in records]


def shifts_for(hf, task, items):
    """No shift, then random directions at +4, -4 and +1 mean final-state norms."""
    norm = float(capture_states(hf, option_requests(task, items)).states.norm(dim=1).mean())
    hidden = hf.model.config.hidden_size
    return [None] + [
        (random_directions(1, hidden, seed)[0], gamma * norm)
        for seed, gamma in ((1, 4.0), (2, -4.0), (3, 1.0))
    ]


def test_every_shift_from_one_forward_equals_a_hooked_forward_per_shift(setup):
    hf, task, items = setup
    shifts = shifts_for(hf, task, items)
    fast = shifted_hits(hf, task, items, shifts)
    assert fast is not None  # a plain Qwen3 head: the closed form applies
    requests = len(option_requests(task, items))
    changed = 0
    for shift, hits in zip(shifts, fast, strict=True):
        logliks, reference = hooked(hf, task, items, shift)
        assert sum(len(x) for x in logliks) == requests
        assert hits == reference
        changed += hits != fast[0]
    assert changed >= 1  # the shifts are large enough to move some answers


@pytest.mark.parametrize("one_by_one", [False, True])
def test_the_log_likelihoods_match_the_hook_to_fp32_rounding(setup, monkeypatch, one_by_one):
    hf, task, items = setup
    shifts = shifts_for(hf, task, items)
    if one_by_one:  # as when a shift is so large that the one product leaves fp64's range
        monkeypatch.setattr(shifted_scoring, "TINY", float("inf"))
    captured = capture_states(hf, option_requests(task, items))
    scores = shifted_loglikelihoods(captured, hf.model.get_output_embeddings(), shifts)
    for k, shift in enumerate(shifts):
        logliks, _ = hooked(hf, task, items, shift)
        flat = torch.tensor([x for row in logliks for x in row], dtype=torch.float64)
        torch.testing.assert_close(scores[k], flat, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("change", ["soft-cap", "think penalty"])
def test_logits_changed_after_the_output_layer_fall_back_to_the_hook(setup, change):
    hf, task, items = setup
    shifts = shifts_for(hf, task, items)[:2]

    def soft_cap(_module, _args, output):
        output.logits = 5.0 * torch.tanh(output.logits / 5.0)
        return output

    if change == "soft-cap":  # as Gemma 2 does after its output layer
        handle = hf.model.register_forward_hook(soft_cap)
        block = contextlib.nullcontext()
    else:  # the backend's own hook on the output layer's result
        handle = None
        block = hf.token_penalty([3, 5, 7], 4.0)
    try:
        with block:
            assert shifted_hits(hf, task, items, shifts) is None
            got = fold_hits(hf, task, items, shifts)
            assert got == [hooked(hf, task, items, s)[1] for s in shifts]
    finally:
        if handle is not None:
            handle.remove()


def test_states_at_each_continuations_end_equal_a_padded_forward_of_the_whole_text(setup):
    from medmerge.mechanism.representations import last_token_states

    hf, task, items = setup
    requests = option_requests(task, items[:8])
    packed = continuation_end_states(hf, requests)
    texts = [r.context + r.continuation for r in requests]
    whole = last_token_states(hf.model, hf.tokenizer, texts, batch_size=4)[-1]
    torch.testing.assert_close(packed, whole, atol=1e-5, rtol=1e-5)
