"""The loop runs unchanged under `accelerate launch`: 2 CPU processes (gloo) match 1 process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medmerge.manifest import read_manifest


def _launch(args: list[str], processes: int, cwd: Path) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    medmerge_cli = Path(sys.executable).with_name("medmerge")
    if processes == 1:
        command = [str(medmerge_cli), *args]
    else:  # on a machine without CUDA the loop makes these gloo CPU processes
        command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", str(processes)]
        command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        command += [str(medmerge_cli), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": "29517"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


# two processes on a 2-core machine (slow tier)
@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tiny_base, pt_file, tmp_path):
    common = ["train", "pt", "--base", str(tiny_base), "--data", str(pt_file), "--max-steps", "4"]
    common += [
        "--set",
        "cutoff_len=64",
        "--set",
        "lora.r=4",
        "--set",
        "learning_rate=1e-2",
        "--set",
        "progress=false",
    ]
    one = _launch([*common, "--out", str(tmp_path / "one"), "--set", "batch_size=4"], 1, tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _launch([*common, "--out", str(tmp_path / "two"), "--set", "batch_size=2"], 2, tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]

    for name in ("one", "two"):
        assert (tmp_path / name / "adapter_config.json").is_file()
        assert read_manifest(tmp_path / name)["steps"] == 4
    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(t.abs().sum() > 0 for k, t in a.items() if "lora_B" in k)
