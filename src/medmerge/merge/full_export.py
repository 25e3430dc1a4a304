"""Stream a merged full checkpoint: read base rows, add their delta in fp64, round once, write.

Memory follows a chunk of rows, not the tensor, the shard or the model: a LoRA-changed
matrix is read, merged and written a few MB of rows at a time with the factors of that one
module; untouched tensors are copied byte for byte, a few MB at a time. Only dense methods
(ties, dare, ...), full module copies and biases hold their whole tensor.

The base is read once, front to back (`CheckpointStream`), and hashed as it is read, so its
fingerprint costs no second pass over it.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from medmerge.checkpoints import (
    DTYPE_NAMES,
    DTYPES,
    INDEX_NAME,
    Checkpoint,
    OutputSpec,
    Payload,
    Scratch,
    TensorEntry,
    output_dtype,
    parse_size,
    plan_shards,
    shard_names,
    write_index,
    write_shard,
)
from medmerge.checkpoints.stream import CheckpointStream
from medmerge.errors import MergeError
from medmerge.lora import (
    Adapter,
    MergeSpec,
    StackedFactors,
    all_finite,
    all_touched,
    factors_ahead,
    get_method,
    merged_weight,
)
from medmerge.lora.delta import exact_rows, exact_rows_step, is_lora_only

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_SKIP_FILES = {INDEX_NAME, "pytorch_model.bin.index.json", "medmerge_manifest.json"}
_CONFIG_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
_CHUNK_BYTES = 2 << 20  # stored bytes of one tensor read, merged and written per step


@dataclass
class MergeJob:
    """Everything one streaming export needs."""

    base: Checkpoint
    adapters: Sequence[Adapter]
    spec: MergeSpec
    out_dtype: torch.dtype
    max_shard_size: str | int | None  # None: keep the base's shards and index


@dataclass
class Exported:
    """What an export wrote and read: the output's file digests, the base's."""

    files: dict[str, str]
    base_digests: dict[Path, str]


def export_full(job: MergeJob, out: Path, progress=None) -> Exported:
    """Write the merged checkpoint's shards, index and side files into `out`.

    Three things overlap: a thread reads (and hashes) the base ahead, this thread computes
    the current tensor (torch uses every core), and a writer thread hashes and writes.
    """
    touched = all_touched(job.adapters)
    main = job.base.stored_float_dtype()
    specs = [_output_spec(entry, main, job.out_dtype) for entry in job.base.entries.values()]
    shards, names, indexed = output_layout(job, specs)
    scratch = Scratch()
    hashes = {}
    with CheckpointStream(job.base.files) as stream, ThreadPoolExecutor(1) as factors_reader:
        payloads = _payloads(job, specs, touched, scratch, stream, factors_reader)
        for shard, name in zip(shards, names, strict=True):
            shard_payloads = itertools.islice(payloads, len(shard))
            hashes[name] = write_shard(out / name, shard, shard_payloads, scratch.release)
            if progress is not None:
                progress(len(shard))
        base_digests = stream.digests()
    if indexed:
        write_index(out, shards, names)
    copy_side_files(job.base.folder, out, job.out_dtype)
    return Exported(hashes, base_digests)


def output_layout(
    job: MergeJob, specs: list[OutputSpec]
) -> tuple[list[list[OutputSpec]], list[str], bool]:
    """The output's shards, their file names, and whether an index goes with them.

    By default the base's own: the same files holding the same tensors in the same order,
    and an index when the base has one, so a tool that reads the base's layout reads the
    merged one. `max_shard_size` re-shards instead, into transformers' file names.
    """
    if job.max_shard_size is not None:
        shards = plan_shards(specs, parse_size(job.max_shard_size))
        return shards, shard_names(len(shards)), len(shards) > 1
    by_file: dict[Path, list[OutputSpec]] = {}
    for spec in specs:
        by_file.setdefault(job.base.entries[spec.name].file, []).append(spec)
    return list(by_file.values()), [f.name for f in by_file], job.base.indexed or len(by_file) > 1


def _output_spec(entry, main: torch.dtype, out_dtype: torch.dtype) -> OutputSpec:
    """A tensor in the base's main float dtype is written in `out_dtype`; any other (fp32
    norms beside bf16 weights, integer buffers) keeps its own dtype."""
    dtype = output_dtype(entry.torch_dtype, main, out_dtype)
    return OutputSpec(entry.name, DTYPE_NAMES[dtype], entry.shape)


def _payloads(
    job: MergeJob,
    specs: list[OutputSpec],
    touched: set[str],
    scratch: Scratch,
    stream: CheckpointStream,
    factors_reader: ThreadPoolExecutor,
) -> Iterator[Payload]:
    """Each tensor's payload in file order: merged (in row chunks where the method allows),
    converted, or copied, each from the base's bytes in the order the stream reads them.
    The next streamed tensor's factors are read from the adapters while this one merges."""
    streamed = [s.name for s in specs if s.name in touched and _streams(job, s.name)]
    factors = factors_ahead(streamed, job.adapters, job.spec.plan, factors_reader, scratch=scratch)
    streaming = set(streamed)
    for spec in specs:
        entry, dtype = job.base.entries[spec.name], DTYPES[spec.dtype]
        if spec.name in streaming:
            stacked = next(factors)
            yield _merged_chunks(job, spec.name, _pieces(entry), stream, dtype, scratch, stacked)
        elif spec.name in touched:
            base = stream.read(entry, scratch.work("merge-base", (entry.nbytes,), torch.uint8))
            yield _merged(job, spec.name, base, dtype, scratch)
        elif spec.dtype == entry.dtype:
            yield _copied(entry, stream, scratch)
        else:
            yield (stream.read(piece).to(dtype) for piece in _pieces(entry))


def _copied(
    entry: TensorEntry, stream: CheckpointStream, scratch: Scratch
) -> Iterator[torch.Tensor]:
    """An untouched tensor's bytes, about _CHUNK_BYTES at a time, in output buffers the
    writer gives back once it has written them."""
    count, step = math.prod(entry.shape), max(1, _CHUNK_BYTES // entry.torch_dtype.itemsize)
    for start in range(0, count, step):
        piece = entry.elements(start, min(start + step, count))
        yield stream.read(piece, scratch.output((piece.nbytes,), torch.uint8))


def _streams(job: MergeJob, name: str) -> bool:
    """True when tensor `name` can be merged a chunk of rows at a time: a matrix that only
    LoRA factors change, under a low-rank-exact method (W + B @ A is row by row)."""
    entry = job.base.entries[name]
    return (
        get_method(job.spec.method).low_rank_exact
        and is_lora_only(name, job.adapters)
        and len(entry.shape) == 2
        and entry.nbytes > 0
    )


def _pieces(entry: TensorEntry) -> list[TensorEntry]:
    """The byte ranges a tensor is read in: runs of about _CHUNK_BYTES of rows, each a whole
    number of `exact_rows` blocks (so each block is the one the whole tensor would get); a
    scalar or empty tensor whole."""
    if not entry.shape or entry.nbytes == 0:
        return [entry]
    rows = entry.shape[0]
    cols = entry.nbytes // (rows * entry.torch_dtype.itemsize)
    step = exact_rows_step(cols) if len(entry.shape) == 2 else 1
    per_chunk = step * max(1, _CHUNK_BYTES // (step * (entry.nbytes // rows)))
    return [entry.rows(start, min(start + per_chunk, rows)) for start in range(0, rows, per_chunk)]


def _merged_chunks(
    job: MergeJob,
    name: str,
    pieces: list[TensorEntry],
    stream: CheckpointStream,
    dtype: torch.dtype,
    scratch: Scratch,
    stacked: StackedFactors,
) -> Iterator[torch.Tensor]:
    """round(W + B @ A) of one tensor, a chunk of rows at a time, with this module's stacked
    factors (dropped after the last chunk)."""
    first = 0
    for piece in pieces:
        rows = stream.read(piece, scratch.work("merge-base", (piece.nbytes,), torch.uint8))
        stop = first + rows.shape[0]
        _check_base_copies(job.adapters, name, rows, slice(first, stop))
        A, B = stacked.rows(first, stop)
        out = scratch.output(tuple(rows.shape), dtype)
        for block, exact in exact_rows(rows, A, B, stacked.transpose, scratch):
            out[block].copy_(exact)
        _refuse_not_finite(name, out, dtype, scratch)
        yield out
        first = stop


def _merged(
    job: MergeJob, name: str, base: torch.Tensor, dtype: torch.dtype, scratch: Scratch
) -> torch.Tensor:
    _check_base_copies(job.adapters, name, base, slice(None))
    spec = job.spec
    merged = merged_weight(
        name, job.adapters, spec.plan, base, dtype, spec.method, spec.params, scratch
    )
    _refuse_not_finite(name, merged, dtype, scratch)
    return merged


def _refuse_not_finite(name: str, merged: torch.Tensor, dtype: torch.dtype, scratch: Scratch):
    if not all_finite(merged):
        scratch.release(merged)
        raise MergeError(
            f"{name}: merged tensor overflows {dtype} (Inf/NaN); use --dtype fp32 or smaller weights"
        )


def _check_base_copies(
    adapters: Sequence[Adapter], name: str, base: torch.Tensor, rows: slice
) -> None:
    """An adapter that saved the base layer (embedding LoRA) must have saved *this* base
    (`base` holds the tensor's `rows`)."""
    for adapter in adapters:
        copy = adapter.base_copies.get(name)
        if copy is not None and not torch.equal(copy[rows].to(base.dtype), base):
            raise MergeError(
                f"{adapter.path}: its saved copy of base tensor {name!r} differs from --base; "
                "the adapter was made for another base model, merge it onto that one"
            )


def copy_side_files(base_dir: Path, out: Path, out_dtype: torch.dtype) -> None:
    """Copy config, generation config, tokenizer and chat template; record the new dtype."""
    for file in sorted(base_dir.iterdir()):
        if (
            file.is_file()
            and file.name not in _SKIP_FILES
            and not file.name.endswith(_WEIGHT_SUFFIXES)
        ):
            shutil.copy2(file, out / file.name)
    config_file = out / "config.json"
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    key = "dtype" if "dtype" in config or "torch_dtype" not in config else "torch_dtype"
    if config.get(key) != _CONFIG_DTYPE.get(out_dtype, config.get(key)):
        config[key] = _CONFIG_DTYPE[out_dtype]
        with open(config_file, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.write("\n")


def resolve_dtype(name: str, base: Checkpoint) -> torch.dtype:
    """'auto' is the base's stored floating dtype (config.json's dtype, else its tensors)."""
    named = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name != "auto":
        return named[name]
    with open(base.folder / "config.json", encoding="utf-8") as handle:
        config = json.load(handle)
    declared = config.get("dtype") or config.get("torch_dtype")
    by_name = {v: k for k, v in _CONFIG_DTYPE.items()}
    return by_name.get(declared, base.stored_float_dtype())
