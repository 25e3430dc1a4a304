"""The sweep: in-memory points equal exported checkpoints; reruns skip finished points."""

from __future__ import annotations

import json

import pytest
import torch

from medmerge.merge import MergeConfig, run_merge
from medmerge.sweep import SweepConfig, run_sweep
from medmerge.sweep import run as sweep_run
from medmerge.sweep.run import evaluate_checkpoint


def test_weight_points_complement_and_independent(sweep_values):
    cfg = SweepConfig(**sweep_values)
    assert cfg.weight_points() == [(0.0, 1.0), (0.3, 0.7), (1.0, 0.0)]
    free = SweepConfig(**{**sweep_values, "grid": {"pt": [0.0, 0.5], "sft": [0.5, 1.0]}})
    assert free.weight_points() == [(0.0, 0.5), (0.0, 1.0), (0.5, 0.5), (0.5, 1.0)]


def test_point_equals_exported_checkpoint_and_rerun_skips(sweep_values, tmp_path, monkeypatch):
    cfg = SweepConfig(**sweep_values)
    assert run_sweep(cfg) == 0
    table = json.loads((tmp_path / "sweep" / "table.json").read_text())
    assert len(table["rows"]) == 6 and (tmp_path / "sweep" / "table.csv").is_file()
    assert table["recommendation"]["point"] is not None

    merged = tmp_path / "merged"
    run_merge(
        MergeConfig(
            base=sweep_values["base"],
            out=str(merged),
            dtype="fp32",
            export="full",
            verify=False,
            adapters=[
                {"path": a["path"], "weight": w}
                for a, w in zip(sweep_values["adapters"], (0.3, 0.7), strict=True)
            ],
        )
    )
    exported = evaluate_checkpoint(str(merged), cfg)
    swept = [r for r in table["rows"] if r["point"] == "pt=0.3,sft=0.7"]
    assert len(exported) == len(swept) == 2
    for got, want in zip(exported, swept, strict=True):
        for key, value in want.items():
            if key in got and key != "raw":
                assert got[key] == value, key
    # MCQ log-likelihoods bit for bit: the swept point's cell against the exported model's
    store = sweep_run.PointStore(
        tmp_path / "sweep",
        sweep_run._inputs(
            cfg, [sweep_run.load_adapter(a["path"]) for a in sweep_values["adapters"]]
        ),
    )
    cell = next(c for c in sweep_run._cells(cfg, (0.3, 0.7)) if c["kind"] == "mcq")
    assert store.get(cell)["loglikelihoods"] == exported[0]["raw"]["mcq"]["hq"]["loglikelihoods"]

    def fail(*_args, **_kwargs):
        raise AssertionError("a finished point was evaluated again")

    monkeypatch.setattr(sweep_run, "_evaluate_cell", fail)
    monkeypatch.setattr(sweep_run, "load_backend", fail)
    assert run_sweep(cfg) == 0  # everything is in points/: no model is even loaded


def test_interrupted_sweep_resumes(sweep_values, monkeypatch):
    cfg = SweepConfig(
        **{**sweep_values, "decodings": {"greedy": {"preset": "A", "max_new_tokens": 4}}}
    )
    real = sweep_run._evaluate_cell
    calls = []

    def crash_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(sweep_run, "_evaluate_cell", crash_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg)
    monkeypatch.setattr(sweep_run, "_evaluate_cell", lambda *a: (calls.append(1), real(*a))[1])
    run_sweep(cfg)
    assert len(calls) == 3 + 4  # 2 finished + 1 crashed, then only the 4 cells left


def test_weights_restored_after_sweep(sweep_values, tiny_base):
    from transformers import AutoModelForCausalLM

    from medmerge.eval.backends.hf import HFBackend

    captured = {}
    real_init = HFBackend.__init__

    def keep(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        captured["model"] = self.model

    HFBackend.__init__ = keep
    try:
        run_sweep(SweepConfig(**{**sweep_values, "grid": {"pt": [0.5], "sft": "complement"}}))
    finally:
        HFBackend.__init__ = real_init
    fresh = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    for (name, a), (_, b) in zip(
        captured["model"].state_dict().items(), fresh.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
