"""CheckpointStream gives every tensor the bytes read_tensor gives it and every file the digest
weights_file_digest gives it: read around the page cache or through it, in the files' order,
out of it or a subset, across block boundaries; a file cut short is named, not misread."""

from __future__ import annotations

import errno
import os
import threading

import pytest
import torch
from safetensors.torch import save_file

from medmerge.checkpoints import Checkpoint, direct, read_tensor
from medmerge.checkpoints.stream import CheckpointStream
from medmerge.errors import ModelError
from medmerge.manifest import weights_file_digest

BLOCK = 8192  # small blocks, so tensors start, end and straddle them at odd offsets


@pytest.fixture
def checkpoint(tmp_path) -> Checkpoint:
    """Two shards of mixed dtypes and sizes: a tensor wider than several blocks, empty and
    one-element tensors, and files whose sizes are not a multiple of any block."""
    generator = torch.Generator().manual_seed(0)
    shards = [
        {
            "embed": torch.randn(37, 301, generator=generator).bfloat16(),
            "norm": torch.randn(301, generator=generator),
            "empty": torch.zeros(0, 5),
            "scalar": torch.tensor([7], dtype=torch.int64),
        },
        {
            "proj": torch.randn(129, 77, generator=generator).half(),
            "bias": torch.randn(3, generator=generator, dtype=torch.float64),
        },
    ]
    weight_map = {}
    for index, tensors in enumerate(shards, start=1):
        name = f"model-{index:05d}-of-00002.safetensors"
        save_file(tensors, tmp_path / name, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(tensors, name)
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": ' + str(weight_map).replace("'", '"') + "}"
    )
    return Checkpoint(tmp_path)


def _read_all(checkpoint, entries, **options):
    with CheckpointStream(checkpoint.files, depth=2, block_bytes=BLOCK, **options) as stream:
        got = {entry.name: stream.read(entry).clone() for entry in entries}
        return got, stream.digests()


def _assert_right(checkpoint, got, digests):
    for name, tensor in got.items():
        expected = read_tensor(checkpoint.entries[name])
        assert tensor.dtype == expected.dtype and tensor.shape == expected.shape
        assert torch.equal(tensor.view(torch.uint8), expected.view(torch.uint8)), name
    assert digests == {file: weights_file_digest(file) for file in checkpoint.files}


@pytest.mark.parametrize("around_cache", [None, True, False])
def test_in_file_order(checkpoint, around_cache):
    entries = list(checkpoint.entries.values())
    got, digests = _read_all(checkpoint, entries, direct=around_cache)
    assert len(got) == 6
    _assert_right(checkpoint, got, digests)


def test_out_of_order_and_a_subset(checkpoint):
    """A tensor asked for behind what was read is read from its file; skipped tensors and
    files are still read and hashed whole."""
    entries = list(checkpoint.entries.values())
    asked = [entries[4], entries[0], entries[5]]  # proj, then back to embed, then bias
    got, digests = _read_all(checkpoint, asked)
    _assert_right(checkpoint, got, digests)


def test_views_of_the_blocks_where_a_run_of_elements_lies_in_one(checkpoint):
    """span gives how many elements from an entry's first lie in one block and view gives
    them without a copy; walked piece by piece, every tensor's bytes and every digest come
    out right, and an entry behind the stream spans nothing (read reads it from its file)."""
    entries = [e for e in checkpoint.entries.values() if e.nbytes]
    got = {}
    with CheckpointStream(checkpoint.files, depth=2, block_bytes=BLOCK) as stream:
        for entry in entries:
            count, start, pieces = entry.nbytes // entry.torch_dtype.itemsize, 0, []
            while start < count:
                piece = entry.elements(start, count)
                span = stream.span(piece)
                assert span > 0
                view = stream.view(entry.elements(start, start + span))
                pieces.append(view.clone())
                start += span
            got[entry.name] = torch.cat(pieces).view(entry.torch_dtype).reshape(entry.shape)
            assert stream.span(entry) == 0  # behind the stream now
        digests = stream.digests()
    assert len(got) == 5 and any(len(e.shape) and e.nbytes > BLOCK for e in entries)
    _assert_right(checkpoint, got, digests)


def test_into_a_caller_buffer(checkpoint):
    entry = checkpoint.entries["embed"]
    buffer = torch.empty(entry.nbytes + 100, dtype=torch.uint8)
    with CheckpointStream(checkpoint.files, block_bytes=BLOCK) as stream:
        tensor = stream.read(entry, buffer)
    assert tensor.data_ptr() == buffer.data_ptr()
    assert torch.equal(tensor, read_tensor(entry))


def test_a_file_cut_short_is_named(checkpoint):
    entry = checkpoint.entries["proj"]
    os.truncate(entry.file, entry.start + 1000)  # after the header was read
    with (
        CheckpointStream(checkpoint.files, block_bytes=BLOCK) as stream,
        pytest.raises(ModelError, match="truncated"),
    ):
        stream.read(entry)


def test_closing_early_stops_the_reader(checkpoint):
    before = threading.active_count()
    with CheckpointStream(checkpoint.files, depth=1, block_bytes=4096) as stream:
        stream.read(checkpoint.entries["scalar"])
    assert threading.active_count() == before


def test_a_filesystem_that_refuses_direct_reads_gets_plain_ones(checkpoint, monkeypatch):
    """O_DIRECT opened, then EINVAL on the first read (as some filesystems do)."""
    plain = os.preadv
    opened = []
    real_open = direct._open_direct

    def remember(path, access=os.O_WRONLY):
        fd = real_open(path, access)
        opened.append(fd)
        return fd

    def refuse(fd, buffers, offset, *flags):
        if fd in opened:
            raise OSError(errno.EINVAL, "Invalid argument")
        return plain(fd, buffers, offset, *flags)

    monkeypatch.setattr(direct, "_open_direct", remember)
    monkeypatch.setattr(direct.os, "preadv", refuse)
    got, digests = _read_all(checkpoint, list(checkpoint.entries.values()), direct=True)
    _assert_right(checkpoint, got, digests)
    assert [fd for fd in opened if fd is not None], "no direct descriptor was opened"


def test_a_file_in_the_page_cache_is_read_through_it(checkpoint):
    file = checkpoint.files[0]
    file.read_bytes()
    fd = os.open(file, os.O_RDONLY)
    try:
        cached = direct.cached_fraction(fd)
        if cached is None:
            pytest.skip("the kernel has no cachestat (Linux < 6.5)")
        assert cached > 0.5
        with direct.ReadSource(file) as source:
            assert source.direct is None
    finally:
        os.close(fd)
