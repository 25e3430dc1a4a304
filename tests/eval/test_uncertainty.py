"""results.json's uncertainty block: every number with n, stderr and a CI computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from scipy import stats as sps

from medmerge.eval.generation import score_outputs
from medmerge.eval.mcq import summarize
from medmerge.eval.uncertainty import sacrebleu_statistic, shown, value_at

PREDICTIONS = [
    "<think>hmm</think>The patient has anemia.",
    "Take aspirin daily.",
    "Therefore, the answer is rest and fluids.",
    "Iron deficiency is the most likely cause.",
    "Refer to a cardiologist.",
    "<think>",
]
REFERENCES = [
    "The patient has iron deficiency anemia.",
    "Aspirin once a day.",
    "Rest and fluids.",
    "The most likely cause is iron deficiency.",
    "See a cardiologist soon.",
    "Blood tests first.",
]


def test_every_gen_number_carries_its_estimate_and_ci():
    results, _ = score_outputs(PREDICTIONS, REFERENCES, "en", [5, 3, 8, 7, 4, 1], None)
    block = results["uncertainty"]
    expected = {f"metrics.{v}.{m}" for v in ("raw", "no_think") for m in ("bleu4", "rougeL")}
    expected |= {"metrics.raw.sacrebleu", "leakage.think_tag_rate", "leakage.length_tokens.mean"}
    assert expected <= set(block)
    for key, entry in block.items():
        assert entry["n"] == 6
        assert entry["estimate"] == pytest.approx(value_at(results, key)), key
        assert entry["ci_low"] <= entry["estimate"] <= entry["ci_high"], key
    think = block["leakage.think_tag_rate"]
    wilson = sps.binomtest(2, 6).proportion_ci(0.95, method="wilson")
    assert (think["ci_low"], think["ci_high"]) == pytest.approx((wilson.low, wilson.high))
    assert shown(results, "leakage.think_tag_rate").startswith("0.333 ± ")


def test_gen_bootstrap_equals_an_independent_resampling():
    results, items = score_outputs(PREDICTIONS, REFERENCES, "en", None, None)
    indices = np.random.default_rng(0).integers(0, 6, (1000, 6))
    bleu = np.array([i["raw"]["bleu4"] for i in items])
    replicates = bleu[indices].mean(axis=1)
    entry = results["uncertainty"]["metrics.raw.bleu4"]
    assert entry["stderr"] == pytest.approx(np.std(replicates, ddof=1))
    assert entry["ci_low"] == pytest.approx(np.percentile(replicates, 2.5))
    assert entry["ci_high"] == pytest.approx(np.percentile(replicates, 97.5))


def test_sacrebleu_resample_equals_corpus_score_of_the_resampled_sentences():
    statistic = sacrebleu_statistic(PREDICTIONS, REFERENCES, "en")
    for row in np.random.default_rng(4).integers(0, 6, (5, 6)):
        preds = [PREDICTIONS[i] for i in row]
        refs = [REFERENCES[i] for i in row]
        expected = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score
        assert statistic(row) == pytest.approx(expected)


def test_mcq_accuracy_ci_is_wilson_per_run_and_subject():
    records = [
        {"subject": "a" if i < 6 else "b", "correct": i % 3 != 0, "correct_norm": i % 2 == 0}
        for i in range(10)
    ]
    summary = summarize(records, "loglik")
    accuracy = summary["uncertainty"]["accuracy"]
    wilson = sps.binomtest(6, 10).proportion_ci(0.95, method="wilson")
    assert accuracy["estimate"] == summary["accuracy"] == 0.6
    assert (accuracy["ci_low"], accuracy["ci_high"]) == pytest.approx((wilson.low, wilson.high))
    assert accuracy["stderr"] == pytest.approx((0.6 * 0.4 / 10) ** 0.5)
    assert summary["per_subject"]["b"]["uncertainty"]["accuracy"]["n"] == 4
    assert summary["uncertainty"]["accuracy_norm"]["estimate"] == 0.5
