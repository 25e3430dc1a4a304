"""Prompts longer than the model's context: truncated from the left as lm-eval does, or refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medmerge.errors import DataError
from medmerge.eval.config import McqEvalConfig
from medmerge.eval.run import run_mcq_eval

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "lm_eval"
CONTEXT = 40


@pytest.fixture
def short_model(tmp_path):
    """The golden tiny model with a 40-token context."""
    folder = tmp_path / "short"
    shutil.copytree(GOLDENS / "tiny_model", folder)
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _config(model, out, policy):
    return McqEvalConfig(
        model=str(model),
        data=[str(GOLDENS / "data/medqa4/test.jsonl")],
        task="medqa_4options",
        device="cpu",
        dtype="fp32",
        context_overflow=policy,
        out=str(out),
    )


def test_truncated_from_the_left_like_lm_eval(short_model, tmp_path, capsys):
    assert run_mcq_eval(_config(short_model, tmp_path / "out", "truncate")) == 0
    assert "4 of 4 prompts exceed the model's 40-token context" in capsys.readouterr().err
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results["context_overflow"] == {"policy": "truncate", "max_length": 40, "items": 4}
    records = [json.loads(x) for x in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(short_model)
    model = AutoModelForCausalLM.from_pretrained(short_model, dtype=torch.float32).eval()
    for record in records:
        for continuation, value in zip(
            record["continuations"], record["loglikelihoods"], strict=True
        ):
            whole = tokenizer(record["context"] + continuation, add_special_tokens=False)
            n_context = len(tokenizer(record["context"], add_special_tokens=False)["input_ids"])
            ids = whole["input_ids"]
            n_cont = len(ids) - n_context
            kept = ids[-(CONTEXT + 1) :]  # lm-eval: (context + continuation)[-(max_length + 1):]
            with torch.no_grad():
                logits = model(torch.tensor([kept[:-1]])).logits[0].double()
            logprobs = torch.log_softmax(logits, -1)[-n_cont:]
            expected = logprobs.gather(1, torch.tensor(kept[-n_cont:])[:, None]).sum().item()
            assert value == pytest.approx(expected, abs=1e-4)


def test_refused_when_asked(short_model, tmp_path):
    with pytest.raises(DataError, match="4 of 4 prompts exceed"):
        run_mcq_eval(_config(short_model, tmp_path / "out", "refuse"))
    assert not (tmp_path / "out").exists()
