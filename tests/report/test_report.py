"""The report is built from the stages' JSON; its HTML is self-contained."""

from __future__ import annotations

import json

from helpers import write_sweep_table
from medmerge.manifest import write_manifest
from medmerge.report.build import ReportConfig, build_report
from medmerge.report.plots import plot_loss_curve, plot_sweep


def _rows(weights=(0.0, 0.3, 1.0)):
    return [
        {
            "point": f"pt={w:g},sft={1 - w:g}",
            "w_pt": w,
            "w_sft": 1 - w,
            "template": "qwen3",
            "decoding": "greedy",
            "think_penalty": 0.0,
            "bleu4": 20 - 10 * w,
            "bleu4_no_think": 20 - 5 * w,
            "rougeL": 10.0,
            "think_tag_rate": w / 2,
            "marker_rate": 0.0,
            "len_tokens": 30.0,
            "avg_accuracy": 0.3 + w / 10,
            "hq.accuracy": 0.3 + w / 10,
            "pareto": True,
        }
        for w in weights
    ]


def test_report_md_and_self_contained_html(tmp_path):
    run = tmp_path / "run"
    (run / "sweep").mkdir(parents=True)
    rows = _rows()
    (run / "sweep" / "table.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "pareto": [],
                "adapters": ["pt", "sft"],
                "recommendation": {
                    "point": "pt=0.3,sft=0.7",
                    "template": "qwen3",
                    "decoding": "greedy",
                    "rule": "maximise avg_accuracy",
                    "feasible": 2,
                },
            }
        )
    )
    plot_sweep(rows, ["pt", "sft"], run / "sweep" / "tradeoff.png")
    (run / "pt").mkdir()
    (run / "pt" / "loss_log.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 3 - i / 10}) + "\n" for i in range(10))
    )
    plot_loss_curve(run / "pt" / "loss_log.jsonl", run / "pt" / "loss_curve.png", "PT")
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    html = (run / "report" / "report.html").read_text()
    md = (run / "report" / "report.md").read_text()
    assert html.count("src='data:image/png;base64,") == 2
    assert "http://" not in html and "https://" not in html
    # the rule's pick without a paired test against the reference is not claimed
    assert "Recommended:" not in md and "tradeoff.png" in md
    assert "pt=0.3,sft=0.7 — the rule's pick (maximise avg_accuracy), not tested against" in md
    assert (run / "report" / "00_sweep_tradeoff.png").is_file()


def test_headline_shows_the_exported_merge_weights_from_its_manifest(tmp_path):
    run = tmp_path / "run"
    (run / "sweep").mkdir(parents=True)
    rows = _rows((0.0, 0.3, 0.6, 1.0))
    write_sweep_table(run, rows)
    (run / "merged").mkdir()
    adapters = [{"path": str(run / "pt"), "weight": 0.6}, {"path": str(run / "sft"), "weight": 0.4}]
    write_manifest(run / "merged", "merge", {"adapters": adapters})
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    md = (run / "report" / "report.md").read_text()
    headline = md.split("## At a glance")[1].split("\n## ")[0]
    assert "pt=0.6,sft=0.4" in headline and "pt=0.3,sft=0.7" not in headline
    assert "pt=0,sft=1" in headline and "pt=1,sft=0" in headline


def test_headline_says_the_paired_verdict_and_power(tmp_path):
    import json

    run = tmp_path / "run"
    (run / "sweep").mkdir(parents=True)
    path = write_sweep_table(run, _rows((0.0, 0.5, 1.0)))
    table = json.loads(path.read_text())
    verdict = "pt=0.5,sft=0.5 is not distinguishable from pt=0,sft=1 at n = 24"
    table["recommendation"]["paired_test"] = {"verdict": verdict}
    table["recommendation"]["warnings"] = ["the bleu4 95% CI half-width is at least ±3.10"]
    path.write_text(json.dumps(table))
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    headline = (run / "report" / "report.md").read_text().split("## At a glance")[1]
    assert verdict in headline and "±3.10" in headline


def test_the_appendix_lists_finished_stage_records_not_a_running_stages_pending_one(tmp_path):
    run = tmp_path / "run"
    (run / ".pipeline").mkdir(parents=True)
    (run / "sft").mkdir()
    (run / ".pipeline" / "sft.json").write_text(json.dumps({"config": {"lr": 1}}))
    (run / ".pipeline" / "report.pending.json").write_text(json.dumps({"config": {}}))
    assert build_report(ReportConfig(run_dir=str(run))) == 0
    md = (run / "report" / "report.md").read_text()
    assert "config of stage sft" in md and "pending" not in md
