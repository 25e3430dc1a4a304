"""Lazy, tensor-at-a-time safetensors reading, so memory follows one tensor.

The safetensors format is an 8-byte header length, a JSON header of names, dtypes, shapes
and byte ranges, then the raw bytes. Reading a tensor reads its byte range only, checked
against the file before any byte is used.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from medmerge.checkpoints.buffers import Scratch
from medmerge.errors import ModelError
from medmerge.manifest import read_json_object, read_model_config

INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100_000_000  # the limit the safetensors library itself enforces
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

    def rows(self, start: int, stop: int) -> TensorEntry:
        """Rows start..stop of this tensor (its first dimension), as an entry of their own:
        a row-major tensor's rows are one contiguous byte range."""
        row_bytes = self.nbytes // self.shape[0]
        return TensorEntry(
            self.name,
            self.file,
            self.dtype,
            (stop - start, *self.shape[1:]),
            self.start + start * row_bytes,
            self.start + stop * row_bytes,
        )

    def elements(self, start: int, stop: int) -> TensorEntry:
        """Elements start..stop of this tensor, flat, as an entry of their own."""
        size = self.torch_dtype.itemsize
        begin = self.start + start * size
        return TensorEntry(
            self.name, self.file, self.dtype, (stop - start,), begin, begin + (stop - start) * size
        )


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
        self.files = self._weight_files()  # in index (or name) order
        self.indexed = (self.folder / INDEX_NAME).is_file()
        self.entries: dict[str, TensorEntry] = {}
        for file in self.files:
            for entry in read_header(file):
                self.entries[entry.name] = entry

    def _weight_files(self) -> list[Path]:
        config = self.folder / "config.json"
        refuse_dangling_link(config)
        if not config.is_file():
            raise ModelError(
                f"{self.folder}: not a model folder (no config.json); pass a Hugging Face model directory"
            )
        self.config = read_model_config(self.folder)
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

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, as `lora.check_fits` takes them."""
        return {name: entry.shape for name, entry in self.entries.items()}

    def stored_float_dtype(self) -> torch.dtype:
        """The dtype most of the floating-point bytes are stored in."""
        sizes: dict[torch.dtype, int] = {}
        for entry in self.entries.values():
            if entry.torch_dtype.is_floating_point:
                sizes[entry.torch_dtype] = sizes.get(entry.torch_dtype, 0) + entry.nbytes
        return max(sizes, key=sizes.get) if sizes else torch.float32


def read_ahead(
    checkpoint: Checkpoint, names: list[str], scratch: Scratch, reader: ThreadPoolExecutor
) -> Iterator[torch.Tensor]:
    """The tensors `names` in order, each read while the caller works on the one before.

    Two reused buffers alternate: a tensor stays valid until the next one after it is asked for.
    """
    entries = [checkpoint.entries[name] for name in names]
    role = f"read-{id(checkpoint)}"

    def read(index: int) -> torch.Tensor:
        entry = entries[index]
        into = scratch.work(f"{role}-{index % 2}", (entry.nbytes,), torch.uint8)
        return read_tensor(entry, into)

    pending = reader.submit(read, 0) if entries else None
    for index in range(len(entries)):
        current = pending.result()
        pending = reader.submit(read, index + 1) if index + 1 < len(entries) else None
        yield current
