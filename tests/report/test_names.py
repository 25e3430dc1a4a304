"""Plots are titled with the final artifact's name, never the staging folder they are drawn in."""

from __future__ import annotations

import json
from types import SimpleNamespace

from PIL import Image

from medmerge.train.config import TrainConfig
from medmerge.train.outputs import write_adapter_folder


class _SavesNothing:
    def save_pretrained(self, folder, **_):
        (folder / "adapter_config.json").write_text("{}")


def test_the_loss_curve_is_titled_with_the_adapter_folder_not_its_staging_sibling(tmp_path):
    staging = tmp_path / ".medmerge-tmp-pt-ef42c4e8"
    staging.mkdir()
    work = tmp_path / "pt.partial"
    work.mkdir()
    log = "".join(json.dumps({"step": i, "loss": 3.0 - i / 10}) + "\n" for i in range(5))
    (work / "loss_log.jsonl").write_text(log)
    cfg = TrainConfig(stage="pt", base=str(tmp_path), data=["d.txt"], out=str(tmp_path / "pt"))
    data = SimpleNamespace(files=[], examples=[], tokens=0, trained_tokens=0, held_out=[])
    write_adapter_folder(staging, _SavesNothing(), {}, cfg, data, {}, work, 1.0)
    assert Image.open(staging / "loss_curve.png").text["Title"] == "PT loss — pt"


def test_the_report_redraws_a_curve_titled_with_a_staging_name_from_its_log(fixture_run):
    from medmerge.report.build import ReportConfig, build_report
    from medmerge.report.plots import plot_loss_curve

    pt = fixture_run / "pt"
    plot_loss_curve(
        pt / "loss_log.jsonl", pt / "loss_curve.png", "PT loss — .medmerge-tmp-pt-ef42c4e8"
    )
    assert build_report(ReportConfig(run_dir=str(fixture_run))) == 0
    [copied] = (fixture_run / "report").glob("*_pt_loss_curve.png")
    assert Image.open(copied).text["Title"] == "PT loss — pt"
    (pt / "loss_log.jsonl").write_text("not json\n")  # unreadable: the stored curve is shown
    assert build_report(ReportConfig(run_dir=str(fixture_run), force=True)) == 0
    [copied] = (fixture_run / "report").glob("*_pt_loss_curve.png")
    assert Image.open(copied).text["Title"] == "PT loss — .medmerge-tmp-pt-ef42c4e8"
