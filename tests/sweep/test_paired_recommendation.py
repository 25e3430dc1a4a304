"""The sweep's recommendation prefers a point over the reference only when McNemar says so;
per-point CIs in the table; power said up front."""

from __future__ import annotations

import pytest
from scipy import stats as sps

from medmerge.sweep.config import Recommendation
from medmerge.sweep.evaluate import flatten
from medmerge.sweep.pareto import recommend
from medmerge.sweep.run import power_line

RULE = Recommendation(reference={"pt": 0.0}, bleu_drop=50.0, max_think=1.0)


def row(pt, correct, bleu=20.0):
    return {
        "point": f"pt={pt}",
        "w_pt": pt,
        "template": "qwen3",
        "decoding": "A",
        "bleu4": bleu,
        "think_tag_rate": 0.0,
        "avg_accuracy": sum(correct) / len(correct),
        "_correct": correct,
    }


def test_a_better_looking_point_that_is_not_significant_is_not_preferred():
    reference = [True] * 12 + [False] * 12  # 24 items per subject, as in the demo
    point = [True] * 15 + [False] * 9  # +3 items, all discordant one way: p = 0.25
    choice = recommend([row(0.0, reference), row(0.5, point)], RULE)
    expected = sps.binomtest(0, 3, 0.5).pvalue
    assert choice["point"] == "pt=0.0"
    assert choice["paired_test"]["p_value"] == pytest.approx(expected)
    assert "not distinguishable from pt=0.0 at n = 24" in choice["paired_test"]["verdict"]


def test_a_significantly_better_point_is_recommended():
    reference = [False] * 40 + [True] * 10
    point = [True] * 50
    choice = recommend([row(0.0, reference), row(0.5, point)], RULE)
    assert choice["point"] == "pt=0.5"
    assert choice["paired_test"]["p_value"] < 0.05
    assert choice["paired_test"]["verdict"].startswith("better than pt=0.0 at n = 50")


def test_flatten_carries_each_suites_ci_and_the_average_s():
    mcq = {
        name: {
            "accuracy": acc,
            "accuracy_norm": acc,
            "uncertainty": {
                "accuracy": {"ci_low": acc - 0.1, "ci_high": acc + 0.1, "stderr": 0.05},
                "accuracy_norm": {"ci_low": acc - 0.1, "ci_high": acc + 0.1, "stderr": 0.05},
            },
        }
        for name, acc in (("a", 0.5), ("b", 0.7))
    }
    columns = flatten({}, mcq)
    assert columns["a.accuracy_lo"] == pytest.approx(0.4)
    assert columns["b.accuracy_hi"] == pytest.approx(0.8)
    half = 1.96 * (2 * 0.05**2) ** 0.5 / 2
    assert columns["avg_accuracy_hi"] - columns["avg_accuracy"] == pytest.approx(half)


def test_one_suites_average_keeps_its_own_ci_and_a_rates_stays_in_0_1():
    from medmerge.eval.generation import score_outputs

    def suite(tagged: int) -> dict:
        predictions = ["<think>x</think>yes"] * tagged + ["yes"] * (100 - tagged)
        return score_outputs(predictions, ["yes"] * 100, "en", None, None)[0]

    # one suite with 1 of 100 answers tagged: the average is that suite, with its Wilson CI
    one = flatten({"g": suite(1)}, {})
    assert one["think_tag_rate"] == pytest.approx(0.01)
    assert one["think_tag_rate_lo"] == one["g.think_tag_rate_lo"] > 0
    assert one["think_tag_rate_hi"] == one["g.think_tag_rate_hi"]
    # two suites (0 and 1 tagged): the normal CI of their mean, cut at 0
    two = flatten({"g": suite(0), "h": suite(1)}, {})
    assert two["think_tag_rate_lo"] == 0.0 < two["think_tag_rate"] < two["think_tag_rate_hi"]


def test_power_said_up_front():
    assert "with n = 24 the 95% CI half-width on accuracy is ±0.19" in power_line("mmlu", 24)
    assert power_line("medqa", 1273).startswith("suite medqa")  # ±0.03: no warning


def test_plot_draws_a_ci_band_per_line():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medmerge.report.plots import _plot_lines

    rows = [
        {"w_pt": w, "avg_accuracy": 0.5, "avg_accuracy_lo": 0.4, "avg_accuracy_hi": 0.6}
        for w in (0.0, 0.5, 1.0)
    ]
    fig, ax = plt.subplots()
    _plot_lines(ax, {"qwen3 / A": rows}, "w_pt", "avg_accuracy")
    assert len(ax.collections) == 1  # the band
    paths = ax.collections[0].get_paths()[0].vertices
    assert paths[:, 1].min() == pytest.approx(0.4) and paths[:, 1].max() == pytest.approx(0.6)
    plt.close(fig)


def test_every_row_says_whether_it_beats_the_reference():
    from medmerge.sweep.pareto import against_reference

    rows = [
        row(0.0, [False] * 40 + [True] * 10),
        row(0.5, [True] * 50),
        row(1.0, [False] * 39 + [True] * 11),
    ]
    against_reference(rows, RULE)
    assert [r["vs_reference"] for r in rows] == [None, "better", "not distinguishable at n = 50"]
    assert rows[2]["vs_reference_p"] == pytest.approx(1.0)
