"""The sweep folder: content-keyed points, refused foreign --out, one lock, atomic tables."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from medmerge.artifacts import STAGING_PREFIX, OutputInUseError, lock_path
from medmerge.errors import MedmergeError
from medmerge.manifest import MANIFEST_NAME, write_manifest
from medmerge.sweep import SweepConfig, run_sweep
from medmerge.sweep import run as sweep_run


@pytest.fixture
def small(sweep_values, repo, tmp_path) -> dict:
    """One weight point, one short decoding, the MCQ suite read from a copy the test may edit."""
    mcq = tmp_path / "mcq.json"
    shutil.copyfile(repo / "data/mcq_en/dev_HEAD_EN.json", mcq)
    suites = json.loads(json.dumps(sweep_values["suites"]))
    suites["mcq"][0].update(data=[str(mcq)], limit=2)
    return {
        **sweep_values,
        "grid": {"pt": [0.5], "sft": "complement"},
        "decodings": {"greedy": {"preset": "A", "max_new_tokens": 4}},
        "suites": suites,
    }


def _counting(monkeypatch) -> list[str]:
    real = sweep_run._evaluate_cell
    kinds: list[str] = []

    def count(backend, cfg, cell, gens, mcqs):
        kinds.append(cell["kind"])
        return real(backend, cfg, cell, gens, mcqs)

    monkeypatch.setattr(sweep_run, "_evaluate_cell", count)
    return kinds


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_edited_mcq_file_recomputes_only_its_cells(small, monkeypatch):
    kinds = _counting(monkeypatch)
    cfg = SweepConfig(**small)
    run_sweep(cfg)
    assert sorted(kinds) == ["gen", "mcq"]
    kinds.clear()
    run_sweep(cfg)
    assert kinds == []

    mcq = Path(small["suites"]["mcq"][0]["data"][0])
    data = json.loads(mcq.read_text("utf-8"))
    first = data["exams"]["Cuaderno_2015_1_M"]["data"][0]
    first["qtext"] = "Which of these is a drug? " + first["qtext"]
    mcq.write_text(json.dumps(data), "utf-8")  # the same path, new content
    run_sweep(cfg)
    assert kinds == ["mcq"]  # the generation cell did not read that file: reused
    manifest = json.loads((Path(cfg.out) / MANIFEST_NAME).read_text())
    assert manifest["inputs"]["data_sha256"][str(mcq)] is not None


def test_force_starts_the_sweep_over(small, monkeypatch):
    kinds = _counting(monkeypatch)
    run_sweep(SweepConfig(**small))
    stale = Path(small["out"]) / "points" / "0123456789abcdef0123.json"
    stale.write_text('{"cell": {}, "results": {}}')
    kinds.clear()
    run_sweep(SweepConfig(**{**small, "force": True}))
    assert sorted(kinds) == ["gen", "mcq"] and not stale.exists()
    assert json.loads((Path(small["out"]) / "table.json").read_text())["rows"]


def _merge_like(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen3"}\n')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    write_manifest(folder, "merge", {"config": {}})


def _adapter_like(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}\n")
    write_manifest(folder, "train", {"train_stage": "sft"})


def _user_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "table.json").write_text('{"mine": 1}\n')
    (folder / "notes.txt").write_text("my notes\n")


@pytest.mark.parametrize("make", [_merge_like, _adapter_like, _user_files])
@pytest.mark.parametrize("force", [False, True])
def test_out_onto_a_folder_that_is_not_a_sweep_is_refused(small, tmp_path, make, force):
    out = tmp_path / "target"
    make(out)
    before = _snapshot(out)
    with pytest.raises(MedmergeError, match="not a sweep folder") as caught:
        run_sweep(SweepConfig(**{**small, "out": str(out), "force": force}))
    assert "\n" not in str(caught.value)
    assert _snapshot(out) == before and sorted(os.listdir(out)) == sorted(before)
    assert not lock_path(out).exists()


def test_a_second_sweep_into_the_same_folder_is_refused(small, tmp_path):
    out = Path(small["out"])
    holder = subprocess.Popen(["sleep", "60"])
    try:
        lock_path(out).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputInUseError, match=f"pid {holder.pid}"):
            run_sweep(SweepConfig(**small))
    finally:
        holder.kill()
        holder.wait()
    assert not out.exists()


def _rows(accuracy: float) -> list[dict]:
    return [
        {
            "point": f"pt={pt},sft={1 - pt}",
            "w_pt": pt,
            "w_sft": 1 - pt,
            "template": "qwen3",
            "decoding": "greedy",
            "think_penalty": 0.0,
            "avg_accuracy": accuracy + pt / 10,
            "bleu4": 10.0 - pt,
            "think_tag_rate": 0.0,
        }
        for pt in (0.0, 0.5, 1.0)
    ]


def test_a_full_disk_while_writing_the_table_keeps_the_old_one(small, tmp_path, monkeypatch):
    cfg = SweepConfig(**small)
    out = Path(cfg.out)
    out.mkdir()
    sweep_run.write_outputs(cfg, out, _rows(0.25), 0.0)
    before = _snapshot(out)
    real_open = open

    class FullDisk:  # writes half, then the device is full
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            self.handle.write(text[: len(text) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return FullDisk(handle) if Path(path).name == "table.json" and "w" in mode else handle

    monkeypatch.setattr(sweep_run, "open", opener, raising=False)
    with pytest.raises(MedmergeError, match="No space left on device") as caught:
        sweep_run.write_outputs(cfg, out, _rows(0.5), 0.0)
    assert "\n" not in str(caught.value)
    assert _snapshot(out) == before  # table.json, table.csv, png and manifest all as they were
    assert not [p for p in os.listdir(out) if p.startswith(STAGING_PREFIX)]
    monkeypatch.undo()
    sweep_run.write_outputs(cfg, out, _rows(0.5), 0.0)
    assert json.loads((out / "table.json").read_text())["rows"][0]["avg_accuracy"] == 0.5
