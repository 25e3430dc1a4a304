"""Interleaved rounds of fresh-process contenders, as a user would compare the tools.

Every contender is a command started in a fresh process, so its interpreter start and
imports count in its wall time, as they would for a user. It may also write a JSON object of
its own in-process figures (`--result PATH` is appended to its command). One warm-up round
first (page cache and files in the same state for all), then `rounds` rounds, each running
every contender once in an order rotated by one per round, so none is always first after
another's run. The load average is recorded at the start of every round: on a shared machine
it varies, and the figures move with it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    wall: float  # seconds, from the parent: process start to exit
    result: dict = field(default_factory=dict)  # what the contender wrote with --result


@dataclass
class Rounds:
    runs: dict[str, list[Run]]
    load: list[tuple[float, float, float]]  # os.getloadavg() at the start of each round


def run_once(command: list[str]) -> Run:
    """One fresh process; a failed contender stops the benchmark with its output."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        started = time.perf_counter()
        done = subprocess.run([*command, "--result", str(result)], capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"contender failed ({done.returncode}): {' '.join(command)}\n{done.stderr}")
        return Run(wall, json.loads(result.read_text()) if result.exists() else {})


def run_rounds(contenders: dict[str, list[str]], rounds: int, warm_up: bool = True) -> Rounds:
    """`rounds` interleaved rounds of every contender (after one warm-up round)."""
    names = list(contenders)
    if warm_up:
        for name in names:
            run_once(contenders[name])
        print(f"  warm-up round done (load {_load_text(os.getloadavg())})", flush=True)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    load = []
    for number in range(rounds):
        load.append(os.getloadavg())
        order = names[number % len(names) :] + names[: number % len(names)]
        for name in order:
            runs[name].append(run_once(contenders[name]))
        times = ", ".join(f"{n} {runs[n][-1].wall:.1f} s" for n in names)
        print(f"  round {number + 1} (load {_load_text(load[-1])}): {times}", flush=True)
    return Rounds(runs, load)


def spread(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def spread_text(values: list[float], digits: int = 1) -> str:
    low, mid, high = spread(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def load_summary(rounds: Rounds) -> str:
    """The 1-minute load average over the rounds, min / median / max."""
    return "load average (1 min) per round: " + spread_text([one for one, _, _ in rounds.load])


def _load_text(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)
