"""Reusable tensor buffers for streamed checkpoint reading, merging and verification.

A fresh large CPU tensor is backed by newly mapped pages, and touching them for the first
time (page faults) costs about as much as the arithmetic done on them. The merge handles
one tensor after another, so it allocates its working buffers once and reuses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import math
import threading
from collections.abc import Iterator

import torch


class Scratch:
    """Working buffers by role (one per role, grown as needed) and a pool of output buffers.

    `work` buffers belong to the calling thread and are overwritten by the next call with
    the same role. `output` buffers are handed out until `release` gives them back, so a
    writer thread can still hold one while the next tensor is computed.
    """

    def __init__(self) -> None:
        self._work: dict[str, torch.Tensor] = {}
        self._free: list[torch.Tensor] = []
        self._lent: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()

    def work(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of `shape` and `dtype`, reusing the role's memory."""
        return _view(_grown(self._work, role, _nbytes(shape, dtype)), shape, dtype)

    def output(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor that stays valid until `release` is called on it."""
        need = _nbytes(shape, dtype)
        with self._lock:
            fits = [k for k, b in enumerate(self._free) if b.numel() >= need]
            if fits:
                flat = self._free.pop(min(fits, key=lambda k: self._free[k].numel()))
            else:
                if self._free:  # a buffer too small for this is dropped, not kept beside it
                    largest = max(range(len(self._free)), key=lambda k: self._free[k].numel())
                    del self._free[largest]
                flat = torch.empty(_size_class(need), dtype=torch.uint8)
            tensor = _view(flat, shape, dtype)
            self._lent[tensor.data_ptr()] = flat
        return tensor

    def release(self, tensor: torch.Tensor) -> None:
        """Give an `output` tensor back; tensors this pool did not lend are ignored."""
        with self._lock:
            flat = self._lent.pop(tensor.data_ptr(), None)
            if flat is not None:
                self._free.append(flat)


def _size_class(need: int) -> int:
    """Chunk-sized buffers in powers of two, so that a tensor's last, shorter chunk reuses a
    full chunk's buffer; whole tensors (above 16 MiB) exactly, not up to twice their size."""
    return 1 << (need - 1).bit_length() if need <= 16 << 20 else need


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return max(math.prod(shape) * dtype.itemsize, 1)


def _grown(buffers: dict[str, torch.Tensor], role: str, need: int) -> torch.Tensor:
    flat = buffers.get(role)
    if flat is None or flat.numel() < need:
        buffers.pop(role, None)  # free the old one before allocating the bigger one
        flat = buffers[role] = torch.empty(need, dtype=torch.uint8)
    return flat


def _view(flat: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    count = math.prod(shape)
    return flat[: count * dtype.itemsize].view(dtype).view(shape)


_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 << 10  # glibc's own starting value
# after the merge: the values glibc's dynamic threshold grows to (its 64-bit maximum, and a
# trim threshold of twice that), so later work allocates from the heap as it did before
_GROWN_MMAP_THRESHOLD = 32 << 20
_GROWN_TRIM_THRESHOLD = 64 << 20


@contextlib.contextmanager
def freed_memory_returned() -> Iterator[None]:
    """Inside the block, large freed allocations go back to the system (glibc only;
    elsewhere nothing).

    glibc raises its mmap threshold to the size of each large block freed (up to 32 MB), so
    after a few MB-sized tensors come and go, later ones are carved from the heap, and the
    heap keeps its peak. A streamed merge then held 20-45 MB more at 1.8 B than at a tiny
    model; with the threshold fixed at glibc's start value, peak RSS stays flat in model size.
    The reused Scratch buffers are what keep this from costing fresh pages per tensor.

    The pin must not outlive the merge: every tensor over 128 KB would then be a fresh
    mmap, and evaluation in the same process (`medmerge run`) ran 1.5-1.9x slower. glibc
    cannot be given back its dynamic threshold, so on leaving the block both thresholds are
    set to where that dynamic threshold grows.
    """
    _mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
    try:
        yield
    finally:
        _mallopt(_M_MMAP_THRESHOLD, _GROWN_MMAP_THRESHOLD)
        _mallopt(_M_TRIM_THRESHOLD, _GROWN_TRIM_THRESHOLD)


def _mallopt(parameter: int, value: int) -> None:
    libc = c_library()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(parameter, value)


@functools.cache
def c_library() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library runs `ldconfig -p` in a subprocess)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None
