"""The layer ablation of `medmerge diagnose` on either backend (vLLM through the stand-in)."""

from __future__ import annotations

import json

import pytest

from helpers import fake_vllm
from medmerge.sweep.diagnose import DiagnoseConfig, run_diagnose


def _diagnose(values: dict, out, **engine) -> list[dict]:
    cfg = DiagnoseConfig(**{**values, **engine, "out": str(out)})
    assert run_diagnose(cfg) == 0
    return json.loads((out / "diagnostics.json").read_text())["ablation"]


@pytest.fixture
def diagnose_values(sweep_values, suites) -> dict:
    return {
        "base": sweep_values["base"],
        "adapters": sweep_values["adapters"],
        "ablation": {
            "suite": suites["gen"][0],
            "template": {"template": "qwen3"},
            "decoding": {"preset": "A", "max_new_tokens": 6},
            "ranges": [[0, 0], [1, 1]],
        },
        "progress": False,
    }


def test_ablation_honours_backend_vllm(diagnose_values, tmp_path, monkeypatch):
    hf = _diagnose(diagnose_values, tmp_path / "hf")
    fake_vllm.install(monkeypatch)
    vllm = _diagnose(diagnose_values, tmp_path / "vllm", backend="vllm", max_model_len=256)

    assert [r["layers"] for r in hf] == ["none", "0", "1", "all"]
    assert [r["layers"] for r in vllm] == [r["layers"] for r in hf]
    for got, want in zip(vllm, hf, strict=True):  # greedy text, so the same metrics
        assert {k: v for k, v in got.items() if k != "layers"} == pytest.approx(
            {k: v for k, v in want.items() if k != "layers"}, abs=1e-6
        ), want["layers"]
    assert len({r["bleu4"] for r in hf}) > 1  # the plans do differ
    (llm,) = fake_vllm.CREATED  # the base loaded once; each plan its own exported adapter
    assert llm.kwargs["enable_lora"] and llm.kwargs["max_model_len"] == 256
    ids = [c["lora_request"].lora_int_id for c in llm.calls]
    assert sorted(set(ids)) == [1, 2, 3, 4]


def test_diagnose_takes_the_engine_settings(diagnose_values, tmp_path):
    cfg = DiagnoseConfig(**{**diagnose_values, "out": str(tmp_path)})
    assert (cfg.backend, cfg.device, cfg.dtype, cfg.batch_size) == ("hf", "cpu", "fp32", 16)
    with pytest.raises(ValueError, match="apply to backend vllm only"):
        DiagnoseConfig(**{**diagnose_values, "out": str(tmp_path), "max_model_len": 64})
