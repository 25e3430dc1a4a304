"""Benchmark: `medmerge verify` (every tensor, no sampling, no logits) against `medmerge merge`.

Both run as a user starts them: the installed `medmerge` command in a fresh process, so the
interpreter start and the torch import are counted in each, timed by wall clock from this
parent. Before every run the page cache is dropped and memory left to settle (root only; see
benchmarks/merge.py's drop_caches), so both read their inputs cold. The runs interleave
(merge, verify, merge, ...) for `--rounds` rounds; the table gives median, min and max.
Goal: verify <= 1.5x merge. Inputs are the ones benchmarks/merge.py makes.

    .venv/bin/python benchmarks/verify.py --size 0.5B [--rounds 5] [--settle 20]
    .venv/bin/python benchmarks/verify.py --size 1.8B
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge import drop_caches, prepare  # benchmarks/merge.py makes the inputs

MEDMERGE = Path(sys.executable).with_name("medmerge")


def _timed(argv: list[str], settle_s: float) -> tuple[float, bool]:
    """Wall seconds of one fresh `medmerge` process, and whether it started cold."""
    cold = drop_caches(settle_s)
    start = time.perf_counter()
    result = subprocess.run([str(MEDMERGE), *argv], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"medmerge {argv[0]} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return seconds, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5B")
    parser.add_argument("--workdir", default="/tmp/medmerge-bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(args.workdir)
    prepare(args.size, work)
    base = work / f"base-{args.size}"
    adapters = [
        "--adapter",
        f"{work}/a0-{args.size}=0.3",
        "--adapter",
        f"{work}/a1-{args.size}=0.7",
    ]
    merged, scratch = work / f"verify-merged-{args.size}", work / f"verify-scratch-{args.size}"
    shutil.rmtree(merged, ignore_errors=True)
    merge_argv = ["merge", "--base", str(base), *adapters, "--no-verify", "--out"]
    _timed([*merge_argv, str(merged)], 0.0)  # the folder every verify round checks
    verify_argv = ["verify", "--base", str(base), "--merged", str(merged), "--no-logits"]
    times: dict[str, list[float]] = {"merge": [], "verify": []}
    cold = True
    for _ in range(args.rounds):
        shutil.rmtree(scratch, ignore_errors=True)
        seconds, was_cold = _timed([*merge_argv, str(scratch)], args.settle)
        times["merge"].append(seconds)
        seconds, cold_verify = _timed(verify_argv, args.settle)
        times["verify"].append(seconds)
        cold = cold and was_cold and cold_verify
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"| {args.size} | tool | median s | min s | max s |\n|---|---|---:|---:|---:|")
    for tool, runs in times.items():
        print(f"| | {tool} | {statistics.median(runs):.1f} | {min(runs):.1f} | {max(runs):.1f} |")
    ratio = statistics.median(times["verify"]) / statistics.median(times["merge"])
    state = "cold page cache" if cold else "page cache NOT dropped (not root)"
    print(f"verify / merge (medians) {ratio:.2f} (goal <= 1.5), {args.rounds} rounds, {state}")


if __name__ == "__main__":
    main()
