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
