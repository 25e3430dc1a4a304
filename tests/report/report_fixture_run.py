"""A run folder with every section the report draws from the headline and mistakes JSON (the
hand-written contract examples in data/), an 11-point sweep with CIs, a loss curve and a
verify.json; shared by the rendering tests and the headless-browser screenshot test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import write_sweep_table
from medmerge.report.plots import plot_loss_curve, plot_sweep

DATA = Path(__file__).parent / "data"
STAGING_NAME = ".medmerge-tmp-merged-0a1b2c3d"


def _sweep_rows() -> list[dict]:
    rows = []
    for step in range(11):
        w = step / 10
        row = {
            "point": f"pt={w:g},sft={1 - w:g}",
            "w_pt": w,
            "w_sft": 1 - w,
            "template": "qwen3",
            "decoding": "greedy",
            "bleu4": 21 - 18 * w,
            "think_tag_rate": 0.4 * w,
            "avg_accuracy": 0.32 + 0.08 * w,
            "pareto": step in (0, 10),
        }
        for column, half in (("bleu4", 3.0), ("think_tag_rate", 0.04), ("avg_accuracy", 0.045)):
            row[f"{column}_lo"], row[f"{column}_hi"] = row[column] - half, row[column] + half
        rows.append(row)
    return rows


def build_fixture_run(run: Path) -> Path:
    for stage in ("headline", "mistakes"):
        (run / stage).mkdir(parents=True)
        shutil.copyfile(DATA / f"{stage}.json", run / stage / f"{stage}.json")
    rows = _sweep_rows()
    write_sweep_table(run, rows)
    plot_sweep(rows, ["pt", "sft"], run / "sweep" / "tradeoff.png")
    (run / "pt").mkdir()
    (run / "pt" / "loss_log.jsonl").write_text(
        "".join(json.dumps({"step": i, "loss": 3 - i / 10}) + "\n" for i in range(10))
    )
    plot_loss_curve(run / "pt" / "loss_log.jsonl", run / "pt" / "loss_curve.png", "PT loss — pt")
    (run / "merged").mkdir()
    failure = f"{run}/{STAGING_NAME}/model.safetensors: 1 tensor differs"
    verify = {"ok": False, "tensors_checked": 10, "failures": [failure], "adapters": []}
    (run / "merged" / "verify.json").write_text(json.dumps(verify))
    (run / ".pipeline").mkdir()
    record = {"config": {"out": str(run / "sft.partial"), "lr": 0.001}}
    (run / ".pipeline" / "sft.json").write_text(json.dumps(record))
    return run
