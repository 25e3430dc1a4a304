"""Streamed safetensors writing: the header is laid out first (the plan is known from the
base), then each tensor's bytes are hashed and written in a thread, so memory follows one tensor.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from medmerge.checkpoints.direct import DirectFile
from medmerge.checkpoints.reading import DTYPES, INDEX_NAME, TensorEntry
from medmerge.manifest import weights_digest_of, weights_hasher

_COPY_CHUNK = 1 << 24


@dataclass(frozen=True)
class OutputSpec:
    """One tensor to be written: name, stored dtype name, shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * DTYPES[self.dtype].itemsize


def output_dtype(stored: torch.dtype, main: torch.dtype, out: torch.dtype) -> torch.dtype:
    """The dtype a merged checkpoint stores a tensor in: `out` for a tensor stored in the base's
    main float dtype `main`, its own dtype otherwise (fp32 norms of a bf16 model stay fp32,
    integer buffers stay integers). Merge writes by this rule and verify checks it."""
    return out if stored == main else stored


def plan_shards(specs: Iterable[OutputSpec], max_bytes: int) -> list[list[OutputSpec]]:
    """Group tensors, in order, into shards of at most `max_bytes` (a bigger tensor stands alone)."""
    shards: list[list[OutputSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


# A tensor's bytes: a tensor, a byte range of a file to copy, or row chunks in order (a
# tensor streamed a few MB at a time, so memory follows the chunk, not the tensor).
Payload = torch.Tensor | TensorEntry | Iterator[torch.Tensor]


def write_shard(
    file: Path,
    specs: list[OutputSpec],
    payloads: Iterable[Payload],
    written: Callable[[torch.Tensor], None] | None = None,
) -> str:
    """Write one safetensors file tensor by tensor; returns the file's digest (manifest.py).

    Hashing and writing run in a thread while the caller computes the next payload;
    `written(tensor)` is called (in that thread) once a tensor payload is copied out.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    handle = DirectFile(file)
    try:
        writer = _ShardWriter(handle, written)
        try:
            writer.put(None, struct.pack("<Q", len(text)) + text)
            for spec, payload in zip(specs, payloads, strict=True):
                if isinstance(payload, Iterator):
                    _put_chunks(writer, spec, payload)
                else:
                    writer.put(spec, payload)
        finally:
            writer.close()
    finally:
        handle.close()
    return weights_digest_of(writer.digest)


def _put_chunks(writer: _ShardWriter, spec: OutputSpec, chunks: Iterator[torch.Tensor]) -> None:
    """Queue a tensor's row chunks as they are made (the chunks are made in this thread)."""
    count = 0
    for chunk in chunks:
        count += chunk.numel() * chunk.element_size()
        writer.put(None, chunk)
    if count != spec.nbytes:
        raise RuntimeError(f"{spec.name}: made {count} bytes in chunks, planned {spec.nbytes}")


class _ShardWriter:
    """A thread that hashes and writes queued payloads in order (both release the GIL)."""

    def __init__(self, handle, written: Callable[[torch.Tensor], None] | None):
        self.handle, self.written = handle, written
        self.digest = weights_hasher()
        self.errors: list[BaseException] = []
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def put(self, spec: OutputSpec | None, payload: Payload | bytes) -> None:
        if self.errors:
            raise self.errors[0]
        self.queue.put((spec, payload))

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.errors:
            raise self.errors[0]

    def _drain(self) -> None:
        copy_buffer = bytearray()
        for spec, payload in iter(self.queue.get, None):
            try:
                if not self.errors:
                    count = self._write_payload(payload, copy_buffer)
                    if spec is not None and count != spec.nbytes:
                        raise RuntimeError(
                            f"{spec.name}: wrote {count} bytes, planned {spec.nbytes}"
                        )
            except BaseException as exc:  # re-raised in the caller's thread
                self.errors.append(exc)
            if isinstance(payload, torch.Tensor) and self.written is not None:
                self.written(payload)

    def _write(self, data) -> int:
        self.digest.update(data)
        self.handle.write(data)
        return len(data)

    def _write_payload(self, payload: Payload | bytes, copy_buffer: bytearray) -> int:
        if isinstance(payload, bytes):
            return self._write(payload)
        if isinstance(payload, TensorEntry):
            return self._copy_range(payload, copy_buffer)
        if payload.numel() == 0:
            return 0
        return self._write(payload.contiguous().reshape(-1).view(torch.uint8).numpy())

    def _copy_range(self, entry: TensorEntry, copy_buffer: bytearray) -> int:
        if len(copy_buffer) < _COPY_CHUNK:
            copy_buffer.extend(bytes(_COPY_CHUNK - len(copy_buffer)))
        view, written = memoryview(copy_buffer), 0
        with open(entry.file, "rb") as source:
            source.seek(entry.start)
            while written < entry.nbytes:
                got = source.readinto(view[: min(_COPY_CHUNK, entry.nbytes - written)])
                if not got:
                    break
                written += self._write(view[:got])
        return written


def write_index(folder: Path, shards: list[list[OutputSpec]], names: list[str]) -> None:
    """The index mapping each tensor to its shard file."""
    weight_map = {
        spec.name: name for shard, name in zip(shards, names, strict=True) for spec in shard
    }
    total = sum(spec.nbytes for shard in shards for spec in shard)
    with open(folder / INDEX_NAME, "w", encoding="utf-8") as handle:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle, indent=2)
        handle.write("\n")


def parse_size(text: str | int) -> int:
    """'2GB', '500MB', '100KB' or a byte count -> bytes (decimal units, as transformers)."""
    if isinstance(text, int):
        return text
    units = {
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
    }
    upper = text.strip().upper()
    for unit, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if upper.endswith(unit):
            return int(float(upper[: -len(unit)]) * factor)
    return int(upper.rstrip("B"))
