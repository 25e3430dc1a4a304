"""Stream a merged full checkpoint: read a base tensor, add its delta in fp64, round once, write.

Memory follows the largest tensor (plus the adapters), not the shard and not the model:
tensors are read and written one at a time, untouched ones copied byte for byte.
"""

from __future__ import annotations

import itertools
import json
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
    output_dtype,
    parse_size,
    plan_shards,
    read_ahead,
    shard_names,
    write_index,
    write_shard,
)
from medmerge.errors import MergeError
from medmerge.lora import Adapter, MergeSpec, all_finite, all_touched, merged_weight

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_SKIP_FILES = {INDEX_NAME, "pytorch_model.bin.index.json", "medmerge_manifest.json"}
_CONFIG_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass
class MergeJob:
    """Everything one streaming export needs."""

    base: Checkpoint
    adapters: Sequence[Adapter]
    spec: MergeSpec
    out_dtype: torch.dtype
    max_shard_size: str | int | None  # None: keep the base's shards and index


def export_full(job: MergeJob, out: Path, progress=None) -> dict[str, str]:
    """Write the merged checkpoint's shards, index and side files into `out`; return file hashes.

    Three things overlap: a thread reads the next touched base tensor, this thread computes
    the current one (torch uses every core), and a writer thread hashes and writes.
    """
    touched = all_touched(job.adapters)
    main = job.base.stored_float_dtype()
    specs = [_output_spec(entry, main, job.out_dtype) for entry in job.base.entries.values()]
    shards, names, indexed = output_layout(job, specs)
    scratch = Scratch()
    hashes = {}
    with ThreadPoolExecutor(max_workers=1) as reader:
        payloads = _payloads(job, specs, touched, scratch, reader)
        for shard, name in zip(shards, names, strict=True):
            shard_payloads = itertools.islice(payloads, len(shard))
            hashes[name] = write_shard(out / name, shard, shard_payloads, scratch.release)
            if progress is not None:
                progress(len(shard))
    if indexed:
        write_index(out, shards, names)
    copy_side_files(job.base.folder, out, job.out_dtype)
    return hashes


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
    reader: ThreadPoolExecutor,
) -> Iterator[Payload]:
    """Each tensor's payload in file order: merged, converted, or a byte range to copy."""
    bases = read_ahead(job.base, [s.name for s in specs if s.name in touched], scratch, reader)
    for spec in specs:
        entry = job.base.entries[spec.name]
        if spec.name in touched:
            yield _merged(job, spec.name, next(bases), DTYPES[spec.dtype], scratch)
        elif spec.dtype == entry.dtype:
            yield entry
        else:
            yield job.base.read(spec.name).to(DTYPES[spec.dtype])


def _merged(
    job: MergeJob, name: str, base: torch.Tensor, dtype: torch.dtype, scratch: Scratch
) -> torch.Tensor:
    _check_base_copies(job.adapters, name, base)
    spec = job.spec
    merged = merged_weight(
        name, job.adapters, spec.plan, base, dtype, spec.method, spec.params, scratch
    )
    if not all_finite(merged):
        scratch.release(merged)
        raise MergeError(
            f"{name}: merged tensor overflows {dtype} (Inf/NaN); use --dtype fp32 or smaller weights"
        )
    return merged


def _check_base_copies(adapters: Sequence[Adapter], name: str, base: torch.Tensor) -> None:
    """An adapter that saved the base layer (embedding LoRA) must have saved *this* base."""
    for adapter in adapters:
        copy = adapter.base_copies.get(name)
        if copy is not None and not torch.equal(copy.to(base.dtype), base):
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
