"""Benchmark: `medmerge verify` (every tensor, no sampling, no logits) against the merge's own time.

Reuses the inputs benchmarks/merge.py makes. Goal: verify time <= ~1.5x merge time.

    .venv/bin/python benchmarks/verify.py [--size 0.5B] [--workdir /tmp/medmerge-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

# As the CLI does for merge and verify, before torch loads: idle OpenMP threads sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from medmerge.cli import main as medmerge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="0.5B")
    parser.add_argument("--workdir", default="/tmp/medmerge-bench")
    args = parser.parse_args()
    work = Path(args.workdir)
    base, out = work / f"base-{args.size}", work / f"verify-out-{args.size}"
    if not base.exists():
        raise SystemExit(f"{base}: run benchmarks/merge.py first (it makes the inputs)")
    shutil.rmtree(out, ignore_errors=True)
    adapters = [
        "--adapter",
        f"{work}/a0-{args.size}=0.3",
        "--adapter",
        f"{work}/a1-{args.size}=0.7",
    ]
    start = time.perf_counter()
    assert (
        medmerge(["merge", "--base", str(base), *adapters, "--out", str(out), "--no-verify"]) == 0
    )
    merge_s = time.perf_counter() - start
    start = time.perf_counter()
    code = medmerge(["verify", "--base", str(base), "--merged", str(out), "--no-logits"])
    verify_s = time.perf_counter() - start
    print(
        f"merge {merge_s:.1f} s, verify {verify_s:.1f} s (exit {code}), ratio {verify_s / merge_s:.2f} (goal <= 1.5)"
    )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
