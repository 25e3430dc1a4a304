"""`eval gen --seeds K`: the spread over sampling seeds, apart from the CI over items."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from medmerge.eval.config import GenEvalConfig
from medmerge.eval.generation import score_outputs
from medmerge.eval.run import run_gen_eval


def _config(tiny_base, repo, out, seeds, preset="B"):
    return GenEvalConfig(
        model=str(tiny_base),
        data=str(repo / "data/qa_en/meqsum_sample.jsonl"),
        out=str(out),
        limit=3,
        seeds=seeds,
        decoding={"preset": preset, "max_new_tokens": 8, "seed": 5},
    )


def test_seed_spread_is_recomputed_from_each_seeds_predictions(tiny_base, repo, tmp_path):
    assert run_gen_eval(_config(tiny_base, repo, tmp_path / "k3", 3)) == 0
    results = json.loads((tmp_path / "k3/results.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "k3/predictions.jsonl").read_text().splitlines()]
    assert results["over_seeds"]["seeds"] == [5, 6, 7]
    per_seed = []
    for seed in (5, 6, 7):
        chosen = [r for r in rows if r["seed"] == seed]
        scored, _ = score_outputs(
            [r["prediction"] for r in chosen],
            [r["reference"] for r in chosen],
            "auto",
            [r["tokens"] for r in chosen],
            None,
        )
        per_seed.append(scored["metrics"]["raw"]["bleu4"])
    spread = results["over_seeds"]["spread"]["metrics.raw.bleu4"]
    assert spread["values"] == pytest.approx(per_seed)
    assert spread["std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert results["metrics"]["raw"]["bleu4"] == pytest.approx(per_seed[0])
    assert results["uncertainty"]["metrics.raw.bleu4"]["n"] == 3


def test_seeds_refused_for_greedy_decoding(tiny_base, repo, tmp_path):
    with pytest.raises(ValidationError, match="greedy"):
        _config(tiny_base, repo, tmp_path / "a", 2, preset="A")


def test_a_partial_decoding_keeps_preset_b():
    common = {"model": "m", "data": "d", "out": "o"}
    assert GenEvalConfig(**common, decoding={"max_new_tokens": 8}).decoding.preset == "B"
    assert GenEvalConfig(**common, decoding={"preset": "A"}).decoding.preset == "A"
    assert GenEvalConfig(**common).decoding.preset == "B"
