"""HFBackend's greedy path (finished rows leave the batch) against stock model.generate."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from medmerge.eval.backends.base import decode_generation
from medmerge.eval.backends.greedy import greedy_generate, plain_greedy
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
