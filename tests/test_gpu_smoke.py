"""scripts/gpu_smoke.sh stays runnable: its --dry-run drives the whole chain on the CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# a minute of CPU: the whole chain in a subprocess (slow tier)
@pytest.mark.slow
def test_gpu_smoke_dry_run(tmp_path):
    out = tmp_path / "smoke"
    result = subprocess.run(
        ["bash", str(REPO / "scripts/gpu_smoke.sh"), "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| total |" in result.stdout
    assert json.loads((out / "merged" / "verify.json").read_text())["ok"] is True
    for folder in ("pt", "sft", "eval_gen", "eval_mcq"):
        assert (out / folder / "medmerge_manifest.json").is_file(), folder
    assert json.loads((out / "eval_mcq" / "results.json").read_text())["n"] == 32


def test_vllm_lora_step_evaluates_the_base_with_adapters():
    """The vLLM steps only run where vLLM is installed; their command lines are checked here."""
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "scripts/gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    out = Path("/runs/smoke")
    adapters = ["--adapter", "/runs/smoke/pt=0.3", "--adapter", "/runs/smoke/sft=0.7"]
    lora = smoke.gen_eval_args(out, "eval_gen_vllm_lora", 8, "16", adapters)
    merged = smoke.gen_eval_args(out, "eval_gen_vllm", 8, "16")
    assert lora[:8] == ["eval", "gen", "--base", "/runs/smoke/base", *adapters]
    assert "--model" not in lora
    assert merged[2:4] == ["--model", "/runs/smoke/merged"]
    assert lora[lora.index("--out") + 1] == "/runs/smoke/eval_gen_vllm_lora"
