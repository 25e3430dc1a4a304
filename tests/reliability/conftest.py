"""A tiny base and two trained adapters, and a runner that drives the CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from medmerge.train import TrainConfig, train

MEDMERGE = str(Path(sys.executable).with_name("medmerge"))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("medmerge: error:")]


def run_cli(*args: str, timeout: int = 300, preexec=None) -> Result:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [MEDMERGE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        preexec_fn=preexec,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_user_error(result: Result, *needles: str) -> str:
    """Exit 2, exactly one `medmerge: error:` line naming the needles, no traceback."""
    assert result.code == 2, (result.code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.error_lines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory, repo) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    texts = root / "texts.jsonl"
    texts.write_text(
        "".join(json.dumps({"text": f"Fever and cough, case {i}. " * 8}) + "\n" for i in range(12))
    )
    common = {
        "base": str(tiny_base),
        "cutoff_len": 32,
        "batch_size": 4,
        "max_steps": 2,
        "progress": False,
    }
    pt = train(TrainConfig(stage="pt", data=[str(texts)], out=str(root / "pt"), **common)).out
    sft_data = str(repo / "data/sft_en/genmedgpt_sample.json")
    sft = train(
        TrainConfig(
            stage="sft",
            data=[sft_data],
            out=str(root / "sft"),
            max_samples=8,
            enable_thinking=False,
            **common,
        )
    ).out
    return {"pt": pt, "sft": sft, "texts": texts}
