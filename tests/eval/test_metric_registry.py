"""A metric is one entry in eval.metrics.METRICS: results, sweep table, Pareto front, report
and plot all read it from there."""

from __future__ import annotations

import pytest

from helpers import write_sweep_table
from medmerge.eval import metrics
from medmerge.eval.generation import score_outputs
from medmerge.eval.metrics import Metric, raw
from medmerge.report.build import ReportConfig, build_report
from medmerge.report.plots import plot_sweep
from medmerge.sweep.evaluate import flatten
from medmerge.sweep.pareto import pareto_front

EXACT = Metric(
    "exact",
    "exact match (%)",
    sample=lambda prediction, reference: 100.0 * (prediction.strip() == reference.strip()),
    read=raw("exact"),
    report=8,
    plot=5,
    objective=1,
)


@pytest.fixture
def with_exact(monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, EXACT))


def test_the_registry_gives_todays_columns_objectives_and_panels():
    assert metrics.report_columns() == [
        "bleu4",
        "bleu4_no_think",
        "rougeL",
        "think_tag_rate",
        "marker_rate",
        "len_tokens",
        "avg_accuracy",
    ]
    assert sorted(metrics.pareto_objectives()) == [
        ("avg_accuracy", 1),
        ("bleu4", 1),
        ("think_tag_rate", -1),
    ]
    assert [m.column for m in metrics.plot_panels()] == [
        "bleu4",
        "avg_accuracy",
        "think_tag_rate",
        "marker_rate",
    ]


def test_a_new_metric_reaches_results_and_the_sweep_table(with_exact):
    results, items = score_outputs(
        ["<think>x</think>yes", "no", "maybe"], ["yes", "no", "no"], "en", None, None
    )
    assert results["metrics"]["raw"]["exact"] == pytest.approx(100 / 3)
    assert results["metrics"]["no_think"]["exact"] == pytest.approx(200 / 3)
    assert [i["raw"]["exact"] for i in items] == [0.0, 100.0, 0.0]
    other, _ = score_outputs(["a"], ["a"], "en", None, None)

    row = flatten({"one": results, "two": other}, {})
    assert row["one.exact"] == pytest.approx(100 / 3) and row["two.exact"] == 100.0
    assert row["exact"] == pytest.approx((100 / 3 + 100) / 2)
    assert row["one.bleu4"] == results["metrics"]["raw"]["bleu4"]  # today's columns stay


def test_a_new_metric_is_a_pareto_objective(with_exact):
    rows = [
        {"bleu4": 10.0, "think_tag_rate": 0.1, "exact": 50.0},
        {"bleu4": 9.0, "think_tag_rate": 0.1, "exact": 60.0},
    ]
    assert pareto_front(rows) == [0, 1]
    assert pareto_front(rows, (("bleu4", 1),)) == [0]


def test_a_new_metric_reaches_the_report_and_the_plot(with_exact, tmp_path):
    run = tmp_path / "run"
    (run / "sweep").mkdir(parents=True)
    rows = [
        {
            "point": f"pt={w:g},sft={1 - w:g}",
            "w_pt": w,
            "w_sft": 1 - w,
            "template": "qwen3",
            "decoding": "greedy",
            "bleu4": 20 - 10 * w,
            "think_tag_rate": w / 2,
            "avg_accuracy": 0.3,
            "exact": 12.5 + w,
        }
        for w in (0.0, 1.0)
    ]
    write_sweep_table(run, rows)
    plot_sweep(rows, ["pt", "sft"], run / "sweep" / "tradeoff.png")
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    md = (run / "report" / "report.md").read_text()
    headers = [line for line in md.splitlines() if line.startswith("| point |")]
    assert len(headers) == 2 and all("| avg_accuracy | exact |" in h for h in headers)
    assert "| 12.5 |" in md and "| 13.5 |" in md
    assert (run / "report" / "00_sweep_tradeoff.png").is_file()


def test_scores_cached_before_a_metric_is_added_still_get_it(monkeypatch):
    before = metrics.sample_scores("the same answer", "the same answer")
    assert "exact" not in before
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, EXACT))
    assert metrics.sample_scores("the same answer", "the same answer")["exact"] == 100.0
