"""verify compares an untouched tensor as pairs of equal runs of elements taken from both
checkpoints' streams: views of the blocks where both hold the next elements, copies where
one file's tensor does not start on an element boundary of its blocks (an odd-sized tensor
before it) or is asked for out of the files' order."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from medmerge.checkpoints import Checkpoint, Scratch, read_tensor
from medmerge.checkpoints.stream import CheckpointStream
from medmerge.verify import run as verify_run

BLOCK = 4096


def _model(folder, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    """A safetensors file holding `tensors` back to back in the order given (safetensors'
    own writer orders them by dtype size, which never leaves one off its element boundary)."""
    folder.mkdir()
    header, data, offset = {}, b"", 0
    names = {torch.uint8: "U8", torch.bfloat16: "BF16"}
    for name, tensor in tensors.items():
        raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data, offset = data + raw, offset + len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    (folder / "config.json").write_text('{"model_type": "qwen3"}')
    return Checkpoint(folder)


@pytest.mark.parametrize("odd_first", [False, True], ids=["aligned", "odd-offset"])
@pytest.mark.parametrize("chunk", [333, 1 << 20])
def test_pairs_hold_the_same_elements_of_both_tensors(tmp_path, odd_first, chunk, monkeypatch):
    monkeypatch.setattr(verify_run, "_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(97, 211, generator=generator).bfloat16()
    base = _model(tmp_path / "base", {"a": torch.zeros(4, dtype=torch.uint8), "embed": embed})
    changed = embed.clone()
    changed.view(-1)[[0, 4000, 9001, embed.numel() - 1]] += 1.0
    extra = {"a": torch.zeros(3 if odd_first else 4, dtype=torch.uint8)}
    merged = _model(tmp_path / "merged", {**extra, "embed": changed})
    entries = [c.entries["embed"] for c in (base, merged)]
    assert (entries[1].start % 2 == 1) == odd_first
    views = []
    with (
        CheckpointStream(base.files, block_bytes=BLOCK) as base_stream,
        CheckpointStream(merged.files, block_bytes=BLOCK) as merged_stream,
    ):
        view = merged_stream.view
        monkeypatch.setattr(merged_stream, "view", lambda e: views.append(e) or view(e))
        pairs = verify_run._chunk_pairs(*entries, base_stream, merged_stream, Scratch())
        got = {"base": [], "merged": []}
        for b, m in pairs:
            assert b.numel() == m.numel() > 0
            got["base"].append(b.clone())
            got["merged"].append(m.clone())
    assert torch.equal(torch.cat(got["base"]).view(-1), read_tensor(entries[0]).view(-1))
    assert torch.equal(torch.cat(got["merged"]).view(-1), changed.view(-1))
    assert (not views) == odd_first  # misaligned: every run copied; aligned: views
