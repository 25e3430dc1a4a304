"""Drive the installed `medmerge` console script in a subprocess, as a user's shell does."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MEDMERGE = str(Path(sys.executable).with_name("medmerge"))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("medmerge: error:")]


def run_cli(*args: str, timeout: int = 300, preexec=None) -> Result:
    """`medmerge ARGS` offline and on one thread; its exit status and both streams."""
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
