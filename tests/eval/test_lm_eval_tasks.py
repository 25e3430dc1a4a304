"""`eval mcq --task NAME`: prompts and tiny-model predictions equal lm-eval 0.4.13's own.

The goldens (tests/goldens/lm_eval/<task>.json) were written by lm-eval itself from the
official-layout files beside them (scripts/goldens/lm_eval_tasks.py), with the committed tiny
model scored by lm-eval's HFLM.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmerge.eval.config import McqEvalConfig
from medmerge.eval.lm_eval_tasks import TASKS, fewshot_exemplars, get_task
from medmerge.eval.mcq_data import load_mcq
from medmerge.eval.run import run_mcq_eval

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "lm_eval"
NAMES = sorted(p.stem for p in GOLDENS.glob("*.json"))


def golden(name: str) -> dict:
    return json.loads((GOLDENS / f"{name}.json").read_text(encoding="utf-8"))


def test_every_golden_task_is_known_and_the_issue_s_tasks_have_goldens():
    assert len(NAMES) == 20
    assert set(NAMES) <= set(TASKS)
    for name in ("medqa_4options", "medqa_5options", "medmcqa", "pubmedqa", "headqa_en"):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_prompts_equal_lm_eval(name):
    gold, task = golden(name), get_task(name)
    items = load_mcq([str(GOLDENS / "data" / p) for p in gold["data"]], task.format)
    assert [task.context(i) for i in items] == [e["context"] for e in gold["zero_shot"]]
    assert [task.continuations(i) for i in items] == [e["continuations"] for e in gold["zero_shot"]]
    assert [i.answer_index for i in items] == [
        e["choices"].index(e["target"]) if isinstance(e["target"], str) else e["target"]
        for e in gold["zero_shot"]
    ]
    if gold["fewshot"]:
        pool = load_mcq([str(GOLDENS / "data" / gold["fewshot"])], task.format)
        shots = fewshot_exemplars(task, pool, gold["few_shot"]["k"])
        assert [task.context(i, shots) for i in items] == [
            e["context"] for e in gold["few_shot"]["items"]
        ]


@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_predictions_equal_lm_eval(name, tmp_path):
    gold = golden(name)
    cfg = McqEvalConfig(
        model=str(GOLDENS / "tiny_model"),
        data=[str(GOLDENS / "data" / p) for p in gold["data"]],
        task=name,
        device="cpu",
        dtype="fp32",
        out=str(tmp_path / "out"),
    )
    assert run_mcq_eval(cfg) == 0
    lines = (tmp_path / "out/predictions.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    expected = gold["zero_shot"]
    assert [r["predicted_index"] for r in records] == [e["pred"] for e in expected]
    assert [r["predicted_index_norm"] for r in records] == [e["pred_norm"] for e in expected]
    for record, entry in zip(records, expected, strict=True):
        assert record["loglikelihoods"] == pytest.approx(entry["loglikelihoods"], abs=1e-4)
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results["prompt_style"] == "lm-eval"
    assert results["uncertainty"]["accuracy"]["n"] == len(expected)
