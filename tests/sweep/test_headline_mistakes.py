"""The headline stage (three models, CIs, paired tests) and the mistakes stage (each broken
merge diagnosed by verify, the wrong template refused by the guard) on the tiny base."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medmerge import stats
from medmerge.merge import MergeConfig, run_merge
from medmerge.sweep.headline import HeadlineConfig, run_headline, terminal_table
from medmerge.sweep.itemwise import Measured, difference, holm_adjust, paired_record
from medmerge.sweep.mistakes import MistakesConfig, run_mistakes


def _text_mcq(suites):
    return {**suites["mcq"][0], "continuation": "text"}


@pytest.fixture(scope="module")
def headline(tiny_base, adapters, suites, tmp_path_factory):
    out = tmp_path_factory.mktemp("headline") / "headline"
    cfg = HeadlineConfig(
        base=str(tiny_base),
        adapters=[
            {"path": str(adapters[0]), "label": "pt"},
            {"path": str(adapters[1]), "label": "sft"},
        ],
        models=[
            {"key": "sft", "label": "SFT-only", "weights": [0.0, 1.0]},
            {"key": "merged", "label": "merged", "weights": [0.3, 0.7]},
            {"key": "pt", "label": "PT-only", "weights": [1.0, 0.0]},
        ],
        gen=suites["gen"][0],
        mcq=_text_mcq(suites),
        template={"template": "qwen3", "enable_thinking": False},
        decodings={
            "greedy": {"preset": "A", "max_new_tokens": 8},
            "sampled": {"preset": "B", "max_new_tokens": 8, "seeds": 2},
        },
        out=str(out),
        progress=False,
    )
    assert run_headline(cfg) == 0
    return json.loads((out / "headline.json").read_text())


def test_headline_has_every_metric_with_ci_and_a_test_per_model(headline):
    names = [(r["name"], r["decoding"]) for r in headline["metrics"]]
    for decoding in ("greedy", "sampled"):
        for name in ("bleu4", "rougeL", "think_tag_rate", "marker_rate", "answer_tokens"):
            assert (name, decoding) in names
    assert ("accuracy", None) in names and ("accuracy_norm", None) in names
    for row in headline["metrics"]:
        for value in row["values"].values():
            low, high = value["ci"]
            assert low <= value["estimate"] <= high and value["n"] > 0
        assert [t["b"] for t in row["tests"]] == ["merged", "pt"]
        for test in row["tests"]:
            assert test["p"] <= test["p_holm"] <= 1 and test["significant"] == (
                test["p_holm"] < 0.05
            )
    sampled = next(r for r in headline["metrics"] if r["decoding"] == "sampled")
    assert sampled["seed_spread"]["sft"]["min"] <= sampled["seed_spread"]["sft"]["max"]
    assert headline["gen_suite"]["n"] == 3 and headline["mcq_suite"]["n"] == 4
    assert len(headline["findings"]) >= 2 and headline["caveat"].startswith("A constructed")


def test_terminal_table_prints_each_model_with_its_interval(headline):
    text = terminal_table(headline)
    assert "SFT-only" in text and "PT-only" in text and "95 % CIs over n = 3" in text
    assert len(text.splitlines()) == len(headline["metrics"]) + 3


def test_binary_metric_takes_mcnemar_and_means_the_paired_bootstrap():
    a = Measured(
        items={"accuracy": np.array([1, 0, 0, 0, 1, 0.0]), "bleu4": np.arange(6.0)},
        per_seed={"accuracy": [2 / 6], "bleu4": [2.5]},
    )
    b = Measured(
        items={"accuracy": np.array([1, 1, 1, 1, 1, 1.0]), "bleu4": np.arange(6.0) + 1},
        per_seed={"accuracy": [1.0], "bleu4": [3.5]},
    )
    acc = difference(a, b, "accuracy")
    assert acc.test == "mcnemar_exact" and acc.p_value == stats.mcnemar_exact(
        [1, 0, 0, 0, 1, 0], [1] * 6
    )
    bleu = difference(a, b, "bleu4")
    assert bleu.test == "paired_bootstrap" and bleu.difference == pytest.approx(1.0)
    entries = [paired_record(acc), paired_record(bleu)]
    holm_adjust(entries)
    assert [e["p_holm"] for e in entries] == stats.holm([acc.p_value, bleu.p_value])


@pytest.fixture(scope="module")
def mistakes(tiny_base, adapters, suites, tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    merged = root / "merged"
    pt, sft = (str(a) for a in adapters)
    merge = MergeConfig(
        base=str(tiny_base),
        adapters=[{"path": pt, "weight": 0.3}, {"path": sft, "weight": 0.7}],
        out=str(merged),
    )
    assert run_merge(merge) == 0
    cfg = MistakesConfig(
        base=str(tiny_base),
        adapters=[{"path": pt, "label": "pt"}, {"path": sft, "label": "sft"}],
        merged=str(merged),
        gen=suites["gen"][0],
        mcq=_text_mcq(suites),
        template={"template": "qwen3", "enable_thinking": False},
        decoding={"preset": "A", "max_new_tokens": 8},
        out=str(root / "mistakes"),
        progress=False,
    )
    assert run_mistakes(cfg) == 0
    return root / "mistakes", json.loads((root / "mistakes" / "mistakes.json").read_text())


def test_each_broken_merge_is_caught_with_its_diagnosis(mistakes):
    _, payload = mistakes
    rows = {r["key"]: r for r in payload["rows"]}
    assert list(rows) == ["alpha_squared", "wrong_adapter", "overwritten", "template"]
    for key in ("alpha_squared", "wrong_adapter", "overwritten"):
        assert rows[key]["verdict"] == "WRONG" and rows[key]["exit_code"] == 1, rows[key]
    assert "scaled twice" in rows["alpha_squared"]["diagnosis"]
    assert "adapter missing: pt" in rows["wrong_adapter"]["diagnosis"]
    assert "0.1" in rows["overwritten"]["diagnosis"] and "refused" in rows["overwritten"]["guard"]
    assert rows["template"]["verdict"] == "REFUSED" and "template" in rows["template"]["diagnosis"]
    assert payload["claimed"]["weights"] == {"pt": 0.3, "sft": 0.7}
    for row in payload["rows"]:
        assert set(row["tests"]) == set(row["metrics"]) and "bleu4" in row["metrics"]


def test_mistakes_output_names_no_staging_folder(mistakes):
    folder, _ = mistakes
    text = (folder / "mistakes.json").read_text()
    assert ".medmerge-tmp" not in text and ".partial" not in text
    for model in ("alpha_squared", "wrong_adapter", "overwritten"):
        assert (folder / "models" / model / "model.safetensors").is_file()
        assert not (folder / "models" / model / "medmerge_manifest.json").exists()


def test_a_rate_that_never_varies_keeps_a_wilson_interval_and_big_differences_survive_holm():
    never = Measured(
        items={"think_tag_rate": np.zeros(200)}, per_seed={"think_tag_rate": [0, 0, 0]}
    )
    low, high = never.summary("think_tag_rate")["ci"]
    assert low == 0 and high == pytest.approx(stats.wilson_interval(0, 200)[1]) and high > 0
    a = Measured(items={"bleu4": np.full(200, 20.0)}, per_seed={"bleu4": [20.0]})
    b = Measured(items={"bleu4": np.full(200, 8.0)}, per_seed={"bleu4": [8.0]})
    entries = [paired_record(difference(a, b, "bleu4")) for _ in range(30)]
    holm_adjust(entries)
    assert all(e["significant"] for e in entries)  # 30 x 2 / 10001 < 0.05
