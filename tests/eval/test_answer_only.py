"""Answer-only decoding: a think tag the model is pushed to write is not written, on both
backends; the plain mode writes it (so the test can fail)."""

from __future__ import annotations

import pytest

from helpers import fake_vllm
from medmerge.eval.answer_only import forbidden_sequences, forbidden_spellings
from medmerge.eval.backends import load_backend
from medmerge.eval.config import Decoding, EngineSettings, ModelSpec


def test_every_marker_is_banned_in_each_spelling():
    spellings = forbidden_spellings(["therefore", "首先"])
    assert spellings[:2] == ["<think>", "</think>"]
    for word in ("therefore", "Therefore", " Therefore", "\nTherefore", "首先", " 首先"):
        assert word in spellings
    assert Decoding(answer_only=True).resolved()["answer_only"] is True
    assert "answer_only" not in Decoding().resolved()  # plain decodings keep their keys


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_answer_only_keeps_a_pushed_think_tag_out(tiny_base, monkeypatch, backend):
    if backend == "vllm":
        fake_vllm.install(monkeypatch)
    extra = {"max_model_len": 256} if backend == "vllm" else {}
    engine = EngineSettings(backend=backend, device="cpu", dtype="fp32", **extra)
    model = load_backend(ModelSpec(model=str(tiny_base)), engine)
    think = model.tokenizer.convert_tokens_to_ids("<think>")
    assert [think] in forbidden_sequences(model.tokenizer)
    prompts = ["<|im_start|>user\nWhat helps a headache?<|im_end|>\n<|im_start|>assistant\n"]
    stops = [model.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with model.token_penalty([think], -100.0):  # a negative penalty pushes the tag up
        plain = model.generate(prompts, Decoding(max_new_tokens=4).resolved(), stops)
        answer = model.generate(
            prompts, Decoding(max_new_tokens=4, answer_only=True).resolved(), stops
        )
    assert plain[0].text.startswith("<think>")
    assert "<think>" not in answer[0].text and answer[0].tokens > 0
