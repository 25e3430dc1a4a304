"""HFBackend's greedy and sampling path (finished rows leave the batch) against stock
model.generate."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from medmerge.eval.backends import greedy
from medmerge.eval.backends.base import decode_generation
from medmerge.eval.backends.greedy import greedy_generate, plain_greedy, plain_sampling
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import ModelSpec

PROMPTS = [
    "Which organ produces insulin?",
    "Fever and cough for three days in a child. The most likely cause is",
    "dose?",
    "A patient with chest pain radiating to the left arm, sweating and nausea for an hour.",
    "What is",
]
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def backend(tiny_base):
    return HFBackend(ModelSpec(model=str(tiny_base)), device="cpu", batch_size=3)


def stock_generate(backend, prompts, stop_ids, new_tokens=NEW_TOKENS):
    """model.generate on the prompts in the given order, one left-padded batch."""
    backend.tokenizer.padding_side = "left"
    enc = backend.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = backend.model.generate(
        **enc,
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=list(stop_ids),
        pad_token_id=backend.pad_id,
    )
    rows = out[:, enc["input_ids"].shape[1] :].tolist()
    return [decode_generation(backend.tokenizer, ids, stop_ids) for ids in rows]


def mid_answer_stops(backend) -> list[int]:
    """Stop ids that end some rows part-way (tokens generate emits at steps 2..8), so that
    rows leave the batch at different steps."""
    free = stock_generate(backend, PROMPTS, [-1])
    seen = Counter()
    for generation in free:
        ids = backend.tokenizer(generation.text, add_special_tokens=False)["input_ids"]
        seen.update(ids[2:8])
    return [token for token, _ in seen.most_common(2)]


def test_greedy_equals_model_generate_when_rows_stop_at_different_steps(backend):
    stops = mid_answer_stops(backend)
    want = stock_generate(backend, PROMPTS, stops)
    assert len({g.tokens for g in want}) > 1 and any(g.stopped for g in want)
    decoding = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "seed": 0}
    assert backend.generate(PROMPTS, decoding, stops) == want


def test_greedy_without_stops_runs_max_new_tokens(backend):
    rows = [backend.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    got = greedy_generate(backend.model, rows, 5, [], backend.pad_id)
    assert [len(g) for g in got] == [5] * len(PROMPTS)
    want = stock_generate(backend, PROMPTS, [-1], new_tokens=5)
    assert [backend.tokenizer.decode(g) for g in got] == [w.text for w in want]


def test_only_plain_greedy_takes_the_fast_path(backend):
    assert plain_greedy(backend.model, {"do_sample": False})
    assert not plain_greedy(backend.model, {"do_sample": True})
    assert not plain_greedy(backend.model, {"do_sample": False, "answer_only": True})
    backend.model.generation_config.repetition_penalty = 1.05  # as Qwen2.5 folders ship
    try:
        assert not plain_greedy(backend.model, {"do_sample": False})
    finally:
        backend.model.generation_config.repetition_penalty = 1.0


def test_think_penalty_applies_on_the_greedy_path(backend):
    first = stock_generate(backend, PROMPTS[:1], [-1], new_tokens=1)[0]
    token = backend.tokenizer(first.text, add_special_tokens=False)["input_ids"][0]
    decoding = {"do_sample": False, "max_new_tokens": 1, "seed": 0}
    with backend.token_penalty([token], 1e4):
        got = backend.generate(PROMPTS[:1], decoding, [])[0]
    assert backend.tokenizer(got.text, add_special_tokens=False)["input_ids"][0] != token
    assert torch.is_grad_enabled()


SAMPLED = [
    {"temperature": 0.6, "top_p": 0.8, "top_k": 0},  # the study's preset B
    {"temperature": 1.3, "top_p": 0.95, "top_k": 20},
    {"temperature": 1.0, "top_p": 1.0, "top_k": 0},  # no warper at all
]


@pytest.mark.parametrize("settings", SAMPLED)
def test_sampling_equals_model_generate_under_the_same_seed(backend, monkeypatch, settings):
    """Two batches of rows that stop at different steps, three seeds: the fast path's tokens
    are model.generate's (which the backend runs when the fast path is switched off)."""
    stops = mid_answer_stops(backend)
    fast, stock = [], []
    for seed in range(3):
        decoding = {"do_sample": True, "max_new_tokens": NEW_TOKENS, "seed": seed, **settings}
        assert plain_sampling(backend.model, decoding)
        fast.append(backend.generate(PROMPTS, decoding, stops))
        with monkeypatch.context() as patched:
            patched.setattr("medmerge.eval.backends.hf.plain_sampling", lambda *_: False)
            stock.append(backend.generate(PROMPTS, decoding, stops))
    assert fast == stock
    assert len({tuple(g.text for g in run) for run in fast}) > 1  # the seeds differ
    assert any(g.stopped for run in fast for g in run)
    assert len({g.tokens for run in fast for g in run}) > 1  # rows left at different steps


def test_only_plain_sampling_takes_the_fast_path(backend):
    sampled = {"do_sample": True, "temperature": 0.6, "top_p": 0.8}
    assert plain_sampling(backend.model, sampled)
    assert not plain_sampling(backend.model, {"do_sample": False})
    assert not plain_sampling(backend.model, {**sampled, "answer_only": True})
    for key, value in (("min_p", 0.1), ("typical_p", 0.9), ("repetition_penalty", 1.05)):
        before = getattr(backend.model.generation_config, key, None)
        setattr(backend.model.generation_config, key, value)
        try:
            assert not plain_sampling(backend.model, sampled), key
        finally:
            setattr(backend.model.generation_config, key, before)
    assert greedy.Sampler(sampled, 2).warpers  # temperature and top-p


def test_rows_that_join_a_running_batch_get_generates_tokens(tiny_base, backend, monkeypatch):
    """Ten prompts through two decoding slots: freed slots are refilled from the queue
    (caches of other lengths joined, unused leading positions trimmed), and every row's
    tokens are still those of one stock model.generate batch."""
    prompts = PROMPTS + [p + " Explain." for p in PROMPTS]
    backend.tokenizer.padding_side = "left"
    enc = backend.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = backend.model.generate(
        **enc, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=backend.pad_id
    )
    ids = out[:, enc["input_ids"].shape[1] :].tolist()
    stops = [t for t, _ in Counter(t for row in ids for t in row[2:8]).most_common(2)]
    want = stock_generate(backend, prompts, stops)
    assert len({g.tokens for g in want}) > 1, [g.tokens for g in want]
    joins = []
    real = greedy._joined
    monkeypatch.setattr(greedy, "_joined", lambda *a: joins.append(1) or real(*a))
    narrow = HFBackend(ModelSpec(model=str(tiny_base)), device="cpu", batch_size=2)
    decoding = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "seed": 0}
    assert narrow.generate(prompts, decoding, stops) == want
    assert len(joins) >= 2  # rows joined a batch that was still decoding


def test_a_sliding_window_cache_keeps_whole_batches(tmp_path):
    from transformers import AutoModelForCausalLM

    from helpers.magnitudes import tiny_config

    sliding = AutoModelForCausalLM.from_config(tiny_config("gemma3"))
    full = AutoModelForCausalLM.from_config(tiny_config("llama"))
    assert not greedy.refills(sliding) and greedy.refills(full)
