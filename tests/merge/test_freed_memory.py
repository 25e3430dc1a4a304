"""The merge's pinned mmap threshold (large freed blocks go back to the system) holds inside
its block only: afterwards a tensor allocated and freed again reuses heap pages, as it does
in a process that never merged (evaluation after the merge in `medmerge run`). Each case
runs in a fresh process, whose heap holds nothing yet."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)

SCRIPT = """
import resource, sys, torch
from medmerge.checkpoints import buffers

def faults_per_block(rounds=40, size=4 << 20):
    # minor page faults per 4 MB block allocated, written and freed (1024 if fresh pages)
    torch.empty(size, dtype=torch.uint8).fill_(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.empty(size, dtype=torch.uint8).fill_(1)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

if sys.argv[1] == "pinned":  # the threshold fixed and left so, as before the block existed
    buffers._mallopt(buffers._M_MMAP_THRESHOLD, buffers._MMAP_THRESHOLD_BYTES)
    print(faults_per_block())
else:
    with buffers.freed_memory_returned():
        inside = faults_per_block()
    print(inside, faults_per_block())
"""


def faults(case: str) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, check=True
    )
    return [float(x) for x in out.stdout.split()]


def test_large_blocks_are_fresh_pages_inside_the_block_and_reused_after_it():
    inside, after = faults("block")
    assert inside > 500  # each block mapped anew: ~1024 faults
    assert after < 256  # the heap keeps the block: few fresh pages (0-128 measured)
    (left_pinned,) = faults("pinned")
    assert left_pinned > 500  # what every later tensor paid before
