"""Lazy, tensor-at-a-time safetensors reading and writing, so memory follows one tensor.

The safetensors format is an 8-byte header length, a JSON header of names, dtypes, shapes
and byte ranges, then the raw bytes. Reading a tensor reads its byte range only; writing
lays out the header first (the plan is known from the base) and then streams each tensor.
"""

from __future__ import annotations

import json
import math
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from medmerge.errors import ModelError
from medmerge.manifest import (
    read_json_object,
    read_model_config,
    weights_digest_of,
    weights_hasher,
)

INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces
_COPY_CHUNK = 1 << 24
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: file, absolute byte range, dtype name and shape."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def read_header(file: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file, in the order their bytes appear.

    The header is checked against the file before any tensor is read: a header length or a
    byte range past the end of the file (a truncated copy, a forged header) is refused here
    instead of failing half-way through a merge.
    """
    fix = "the file is truncated or damaged: re-download or re-save it"
    try:
        with open(file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 8:
                raise ModelError(f"{file}: {size} bytes, too short for a safetensors file; {fix}")
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(size - 8, MAX_HEADER_BYTES):
                raise ModelError(
                    f"{file}: safetensors header claims {length:,} bytes but the file holds "
                    f"{size:,}; {fix}"
                )
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise ModelError(f"{file}: cannot read ({exc.strerror or exc}); {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{file}: safetensors header is not valid JSON ({exc}); {fix}") from None
    if not isinstance(header, dict):
        raise ModelError(f"{file}: safetensors header is not a JSON object; {fix}")
    data_start = 8 + length
    entries = [
        _entry(file, name, info, data_start, size - data_start, fix)
        for name, info in header.items()
        if name != "__metadata__"
    ]
    return sorted(entries, key=lambda e: e.start)


def _entry(file: Path, name: str, info: object, data_start: int, data_size: int, fix: str):
    """One header record as a TensorEntry, checked: known dtype, sizes agree, bytes present."""
    try:
        dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
        valid = isinstance(dtype, str) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, start, end)
        )
    except (TypeError, KeyError, ValueError):
        valid = False
    if not valid:
        raise ModelError(f"{file}: tensor {name!r} has a malformed header record; {fix}")
    if dtype not in DTYPES:
        raise ModelError(
            f"{file}: tensor {name!r} has dtype {dtype}, which medmerge does not read; "
            f"convert it to one of {', '.join(DTYPES)}"
        )
    count = math.prod(shape)
    if end - start != count * DTYPES[dtype].itemsize:
        raise ModelError(
            f"{file}: tensor {name!r} claims bytes {start}..{end} for shape {list(shape)} "
            f"{dtype}, which needs {count * DTYPES[dtype].itemsize}; {fix}"
        )
    if end > data_size:
        raise ModelError(
            f"{file}: tensor {name!r} needs bytes up to {end:,} of the data but the file "
            f"holds {data_size:,}; {fix}"
        )
    return TensorEntry(name, file, dtype, tuple(shape), data_start + start, data_start + end)


def read_tensor(entry: TensorEntry, into: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor's bytes (and nothing else): into a fresh CPU tensor, or into the flat
    uint8 buffer `into` (at least entry.nbytes long), whose memory the result then shares."""
    if entry.dtype not in DTYPES:
        raise ModelError(f"{entry.file}: tensor {entry.name!r} has unsupported dtype {entry.dtype}")
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=entry.torch_dtype)
    raw = torch.empty(entry.nbytes, dtype=torch.uint8) if into is None else into[: entry.nbytes]
    with open(entry.file, "rb") as handle:
        handle.seek(entry.start)
        got = handle.readinto(raw.numpy())
    if got != entry.nbytes:
        raise ModelError(f"{entry.file}: tensor {entry.name!r} is truncated; re-download the model")
    return raw.view(entry.torch_dtype).reshape(entry.shape)


def refuse_dangling_link(path: Path) -> None:
    """A symbolic link that resolves to nothing (a loop, a deleted target) is named as such,
    not reported as a missing file."""
    if path.is_symlink() and not path.exists():
        raise ModelError(
            f"{path}: a symbolic link that leads nowhere (a link loop or a deleted target); "
            "replace it with the file it should point to"
        )


def _indexed_shards(index: Path) -> list[str]:
    """The shard file names an index's weight_map lists, each a plain name in the index's folder.

    A shard path that leaves the folder ('../x', '/abs') would be read by the merge and yet
    left out of the model's hash, which covers the folder's own files only.
    """
    fix = "re-download the model or delete the index of a single-file model"
    weight_map = read_json_object(index, fix).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelError(f"{index}: no 'weight_map' of tensor names to shard files; {fix}")
    names = set()
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.endswith(".safetensors"):
            raise ModelError(
                f"{index}: weight_map gives tensor {tensor!r} the shard {shard!r}, not a "
                f"*.safetensors file name; {fix}"
            )
        if shard != PurePosixPath(shard).name or "\\" in shard:
            raise ModelError(
                f"{index}: weight_map puts tensor {tensor!r} in {shard!r}, not a file of the "
                f"model folder; shards must be plain file names beside the index ({fix})"
            )
        names.add(shard)
    return sorted(names)


class Checkpoint:
    """A Hugging Face model folder's tensors (single file or sharded with an index), read lazily."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        files = self._weight_files()
        self.entries: dict[str, TensorEntry] = {}
        for file in files:
            for entry in read_header(file):
                self.entries[entry.name] = entry

    def _weight_files(self) -> list[Path]:
        config = self.folder / "config.json"
        refuse_dangling_link(config)
        if not config.is_file():
            raise ModelError(
                f"{self.folder}: not a model folder (no config.json); pass a Hugging Face model directory"
            )
        read_model_config(self.folder)
        index = self.folder / INDEX_NAME
        if index.is_file():
            files = [self.folder / name for name in _indexed_shards(index)]
        else:
            files = sorted(self.folder.glob("*.safetensors"))
        if not files:
            raise ModelError(
                f"{self.folder}: no *.safetensors weights; convert the checkpoint to safetensors "
                "(pickle .bin checkpoints are not read for safety)"
            )
        for file in files:
            refuse_dangling_link(file)
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            where = index if index.is_file() else self.folder
            raise ModelError(
                f"{where}: shard(s) {missing} are not files in {self.folder}; re-download the model"
            )
        return files

    def read(self, name: str) -> torch.Tensor:
        return read_tensor(self.entries[name])

    def stored_float_dtype(self) -> torch.dtype:
        """The dtype most of the floating-point bytes are stored in."""
        sizes: dict[torch.dtype, int] = {}
        for entry in self.entries.values():
            if entry.torch_dtype.is_floating_point:
                sizes[entry.torch_dtype] = sizes.get(entry.torch_dtype, 0) + entry.nbytes
        return max(sizes, key=sizes.get) if sizes else torch.float32


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


Payload = torch.Tensor | TensorEntry


def write_shard(
    file: Path,
    specs: list[OutputSpec],
    payloads: Iterable[Payload],
    written: Callable[[torch.Tensor], None] | None = None,
) -> str:
    """Write one safetensors file tensor by tensor; returns the file's digest (manifest.py).

    Hashing and writing run in a thread while the caller computes the next payload;
    `written(tensor)` is called (in that thread) once a tensor payload is on disk.
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
    with open(file, "wb") as handle:
        writer = _ShardWriter(handle, written)
        try:
            writer.put(None, struct.pack("<Q", len(text)) + text)
            for spec, payload in zip(specs, payloads, strict=True):
                writer.put(spec, payload)
        finally:
            writer.close()
    return weights_digest_of(writer.digest)


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
    """The index mapping each tensor to its shard (only for more than one shard)."""
    if len(shards) == 1:
        return
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
