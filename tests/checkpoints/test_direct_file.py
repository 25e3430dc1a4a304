"""DirectFile writes exactly the bytes it is given, in order, whether the filesystem takes
O_DIRECT or not, across staging-buffer and block boundaries."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from medmerge.checkpoints import direct
from medmerge.checkpoints.direct import DirectFile

# Pieces that straddle 4 KiB blocks and the staging buffer, an empty one, and a tail.
SIZES = [8, 4088, 0, 1, direct._STAGE_BYTES - 4097, 3 * 4096, direct._STAGE_BYTES + 5, 777]


def _pieces():
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, size, dtype=np.uint8) for size in SIZES]


def _write(path, pieces) -> DirectFile:
    handle = DirectFile(path)
    for index, piece in enumerate(pieces):  # bytes, memoryviews and arrays alike
        data = (piece.tobytes(), memoryview(piece.tobytes()), piece)[index % 3]
        assert handle.write(data) == len(piece)
    handle.close()
    return handle


def test_every_byte_in_order(tmp_path):
    pieces = _pieces()
    _write(tmp_path / "f", pieces)
    assert (tmp_path / "f").read_bytes() == b"".join(p.tobytes() for p in pieces)


def test_without_o_direct_every_byte_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(direct, "_open_direct", lambda path: None)
    pieces = _pieces()
    _write(tmp_path / "f", pieces)
    assert (tmp_path / "f").read_bytes() == b"".join(p.tobytes() for p in pieces)


def test_a_filesystem_that_refuses_direct_writes_gets_plain_ones(tmp_path, monkeypatch):
    """O_DIRECT opened but EINVAL on the first aligned write (as some filesystems do)."""
    plain = direct._write_all

    def refuse_direct(fd, view, offset):
        if fd not in (None, opened[0].fd):
            raise OSError(errno.EINVAL, "Invalid argument")
        plain(fd, view, offset)

    opened = []
    real_init = DirectFile.__init__

    def remember(self, path):
        real_init(self, path)
        opened.append(self)

    monkeypatch.setattr(direct, "_write_all", refuse_direct)
    monkeypatch.setattr(DirectFile, "__init__", remember)
    pieces = _pieces()
    handle = _write(tmp_path / "f", pieces)
    assert handle.direct is None
    assert (tmp_path / "f").read_bytes() == b"".join(p.tobytes() for p in pieces)


def test_an_error_other_than_einval_is_raised(tmp_path, monkeypatch):
    def full(fd, view, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct, "_write_all", full)
    handle = DirectFile(tmp_path / "f")
    with pytest.raises(OSError, match="No space"):
        handle.write(bytes(direct._STAGE_BYTES + 1))
