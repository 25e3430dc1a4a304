"""Benchmark: `medmerge verify` (every tensor, no sampling, no logits) against `medmerge merge`.

Both run as a user starts them: the installed `medmerge` command in a fresh process, so the
interpreter start and the torch import are counted in each, timed by wall clock from this
parent. Before every run the page cache is dropped and memory left to settle (root only; see
benchmarks/merge.py's drop_caches), so both read their inputs cold, and the load average is
recorded. A warm-up pair, then `--rounds` interleaved rounds (merge, verify, merge, ...); the
table gives median, min and max. Goal: verify <= 1.5x merge. Inputs are the ones
benchmarks/merge.py makes. The seconds depend on the machine's state (other jobs); the
ratio of medians from one run of this script is the figure to compare.

    .venv/bin/python benchmarks/verify.py --size 0.5B [--rounds 5] [--settle 20]
    .venv/bin/python benchmarks/verify.py --size 1.8B
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge import MEDMERGE, prepare, run_fresh  # benchmarks/merge.py makes the inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5B")
    parser.add_argument("--workdir", default="/tmp/medmerge-bench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--json", help="also write every run here")
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
    merge_argv = [str(MEDMERGE), "merge", "--base", str(base), *adapters, "--no-verify", "--out"]
    run_fresh([*merge_argv, str(merged)], 0.0)  # the folder every verify round checks
    verify_argv = [str(MEDMERGE), "verify", "--base", str(base), "--merged", str(merged)]
    verify_argv.append("--no-logits")
    runs: dict[str, list[dict]] = {"merge": [], "verify": []}
    for index in range(args.rounds + 1):  # round 0 is the warm-up, not counted
        shutil.rmtree(scratch, ignore_errors=True)
        pair = {
            "merge": run_fresh([*merge_argv, str(scratch)], args.settle),
            "verify": run_fresh(verify_argv, args.settle),
        }
        for tool, row in pair.items():
            if index:
                runs[tool].append(row)
            label = f"round {index}" if index else "warm-up"
            print(f"{label}: {tool:<7}{row['seconds']:7.1f} s  load {row['load1']:.2f}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    _report(args, runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"size": args.size, "runs": runs}, indent=2))


def _report(args, runs: dict[str, list[dict]]) -> None:
    print(
        f"| {args.size} | tool | median s | min s | max s | load1 |\n|---|---|---:|---:|---:|---|"
    )
    for tool, rows in runs.items():
        seconds, loads = [r["seconds"] for r in rows], [r["load1"] for r in rows]
        print(
            f"| | {tool} | {statistics.median(seconds):.1f} | {min(seconds):.1f} | "
            f"{max(seconds):.1f} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    medians = {tool: statistics.median(r["seconds"] for r in rows) for tool, rows in runs.items()}
    cold = all(r["cold"] for rows in runs.values() for r in rows)
    state = "cold page cache" if cold else "page cache NOT dropped (not root)"
    print(
        f"verify / merge (medians) {medians['verify'] / medians['merge']:.2f} (goal <= 1.5), "
        f"{args.rounds} rounds after a warm-up, {state}"
    )


if __name__ == "__main__":
    main()
