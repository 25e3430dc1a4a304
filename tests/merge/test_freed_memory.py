"""The merge's pinned mmap threshold (large freed blocks go back to the system) holds inside
its block only: afterwards a tensor allocated and freed again reuses heap pages, as it does
in a process that never merged (evaluation after the merge in `medmerge run`)."""

from __future__ import annotations

import platform
import resource

import pytest
import torch

from medmerge.checkpoints import freed_memory_returned

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
ROUNDS, BYTES = 40, 4 << 20  # 4 MB blocks: above the pin's 128 KB, below the grown 32 MB


def faults_per_block() -> float:
    """Minor page faults per 4 MB block allocated, written and freed (1024 pages if fresh)."""
    torch.empty(BYTES, dtype=torch.uint8).fill_(1)  # the heap has room for one already
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(ROUNDS):
        torch.empty(BYTES, dtype=torch.uint8).fill_(1)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / ROUNDS


def test_large_blocks_are_fresh_pages_inside_the_block_and_reused_after_it():
    with freed_memory_returned():
        inside = faults_per_block()
    after = faults_per_block()
    assert inside > 500  # each block mapped anew: ~1024 faults
    assert after < 50  # the heap keeps the block: no fresh page
