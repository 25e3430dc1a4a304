"""HFBackend's fast paths against stock transformers: shared-prefix scoring, batched greedy."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medmerge.eval.backends import LoglikRequest
from medmerge.eval.backends.base import continuation_split, continuation_splits
from medmerge.eval.backends.hf import HFBackend, group_by_prefix
from medmerge.eval.backends.packed_scoring import batch_inputs, packed_row
from medmerge.eval.config import ModelSpec

QUESTIONS = [
    "Which organ produces insulin?\nA. liver\nB. pancreas\nC. kidney\nAnswer:",
    "Fever and cough for three days in a child. The most likely cause is\nAnswer:",
    "Q: dose?\nAnswer:",
    "A patient with chest pain radiating to the left arm, sweating and nausea for an hour. "
    "Which test comes first?\nA. ECG\nB. CT\nC. MRI\nD. X-ray\nE. none\nAnswer:",
]
OPTIONS = [
    [" A", " B", " C"],
    [" a viral infection of the upper airways", " bacterial pneumonia", " asthma", " reflux"],
    [" 5 mg", " five milligrams twice a day"],
    [" A", " B", " C", " D", " electrocardiogram at once"],
]


@pytest.fixture(scope="module")
def stock(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    return tokenizer, model


def requests() -> list[LoglikRequest]:
    # interleaved so that groups are not contiguous in the request list
    pairs = [(q, o) for q, options in zip(QUESTIONS, OPTIONS, strict=True) for o in options]
    return [LoglikRequest(q, o) for q, o in pairs[1::2] + pairs[::2]]


def full_sequence_loglik(tokenizer, model, request: LoglikRequest) -> float:
    """The straightforward computation: the whole string once, continuation log-probs summed."""
    ids, n_cont = continuation_split(tokenizer, request.context, request.continuation)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    positions = torch.arange(len(ids) - 1 - n_cont, len(ids) - 1)
    return float(logprobs[positions, torch.tensor(ids[-n_cont:])].sum())


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_shared_prefix_scoring_equals_full_sequence(tiny_base, stock, batch_size):
    tokenizer, model = stock
    backend = HFBackend(ModelSpec(model=str(tiny_base)), device="cpu", batch_size=batch_size)
    reqs = requests()
    got = backend.loglikelihood(reqs)
    want = [full_sequence_loglik(tokenizer, model, r) for r in reqs]
    assert len(got) == len(reqs)
    for g, w, r in zip(got, want, reqs, strict=True):
        assert abs(g - w) < 1e-4, (r, g, w)


def test_single_token_continuations_need_no_second_pass(tiny_base, stock):
    tokenizer, model = stock
    backend = HFBackend(ModelSpec(model=str(tiny_base)), device="cpu", batch_size=4)
    reqs = [LoglikRequest(QUESTIONS[0], o) for o in OPTIONS[0]] + [
        LoglikRequest(QUESTIONS[3], o) for o in OPTIONS[3][:4]
    ]
    calls = []
    hook = backend.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        got = backend.loglikelihood(reqs)
    finally:
        hook.remove()
    assert len(calls) == 1  # one forward over both questions, no continuation pass
    for g, r in zip(got, reqs, strict=True):
        assert abs(g - full_sequence_loglik(tokenizer, model, r)) < 1e-4


def test_groups_share_only_common_context_tokens():
    # The second continuation was tokenized with the context's last token merged into it.
    encoded = [([5, 6, 7, 8], 1), ([5, 6, 9, 8], 2), ([1, 2], 1)]
    groups = group_by_prefix(encoded, ["ctx", "ctx", "other"])
    assert [(g.prefix, g.indices) for g in groups] == [([5, 6], [0, 1]), ([1], [2])]
    split = group_by_prefix([([5, 6], 1), ([4, 6], 1)], ["c", "c"])
    assert [(g.prefix, g.indices) for g in split] == [([5], [0]), ([4], [1])]


def test_eager_attention_scores_equal_full_sequence(tiny_base, stock):
    # eager adds the mask to the scores, so the packed rows' mask must be additive there
    tokenizer, model = stock
    backend = HFBackend(ModelSpec(model=str(tiny_base)), device="cpu", batch_size=3)
    backend.model.set_attn_implementation("eager")
    assert backend.model.config._attn_implementation == "eager"
    reqs = requests()
    for got, r in zip(backend.loglikelihood(reqs), reqs, strict=True):
        assert abs(got - full_sequence_loglik(tokenizer, model, r)) < 1e-4, r


def test_packed_row_holds_each_token_once_and_scores_the_continuations():
    group = group_by_prefix([([1, 2, 3, 4, 5], 2), ([1, 2, 3, 6], 1)], ["c", "c"])[0]
    row = packed_row(group)
    assert row.ids == [1, 2, 3, 4]  # prefix once, option 1 without its last token, option 2 none
    assert row.positions == [0, 1, 2, 3]
    assert row.option == [0, 0, 0, 1]
    assert row.scored == [[2, 3], [2]]  # the prefix's last position is shared
    allowed = batch_inputs([row, packed_row(group_by_prefix([([7, 8, 9], 1)], ["d"])[0])], 0)[
        "allowed"
    ]
    assert not allowed[1, :2, 2:].any()  # no real token sees the padding
    assert allowed[0, 3].tolist() == [True, True, True, True]


def test_continuation_splits_equal_one_request_at_a_time(stock):
    tokenizer, _ = stock
    reqs = requests()
    assert continuation_splits(tokenizer, reqs) == [
        continuation_split(tokenizer, r.context, r.continuation) for r in reqs
    ]
