"""scripts/gpu_smoke.sh stays runnable: its --dry-run drives the whole chain on the CPU."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
