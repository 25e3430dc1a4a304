"""Stream a merged full checkpoint: read a base tensor, add its delta in fp64, round once, write.

Memory follows the largest tensor (plus the adapters), not the shard and not the model:
tensors are read and written one at a time, untouched ones copied byte for byte.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from medmerge.errors import MergeError
from medmerge.merge.adapters import Adapter
from medmerge.merge.checkpoint import (
    DTYPE_NAMES,
    INDEX_NAME,
    Checkpoint,
    OutputSpec,
    Payload,
    parse_size,
    plan_shards,
    shard_names,
    write_index,
    write_shard,
)
from medmerge.merge.delta import WeightPlan, all_finite, all_touched, merged_weight
from medmerge.merge.methods import MethodParams

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
_SKIP_FILES = {INDEX_NAME, "pytorch_model.bin.index.json", "medmerge_manifest.json"}
_CONFIG_DTYPE = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass
class MergeJob:
    """Everything one streaming export needs."""

    base: Checkpoint
    adapters: Sequence[Adapter]
    plan: WeightPlan
    method: str
    params: MethodParams
    out_dtype: torch.dtype
    max_shard_size: str | int


def export_full(job: MergeJob, out: Path, progress=None) -> dict[str, str]:
    """Write the merged checkpoint's shards, index and side files into `out`; return file hashes."""
    touched = all_touched(job.adapters)
    specs = [_output_spec(entry, job.out_dtype) for entry in job.base.entries.values()]
    shards = plan_shards(specs, parse_size(job.max_shard_size))
    names = shard_names(len(shards))
    hashes = {}
    for shard, name in zip(shards, names, strict=True):
        hashes[name] = write_shard(out / name, shard, lambda spec: _payload(job, spec, touched))
        if progress is not None:
            progress(len(shard))
    write_index(out, shards, names)
    copy_side_files(job.base.folder, out, job.out_dtype)
    return hashes


def _output_spec(entry, out_dtype: torch.dtype) -> OutputSpec:
    dtype = DTYPE_NAMES[out_dtype] if entry.torch_dtype.is_floating_point else entry.dtype
    return OutputSpec(entry.name, dtype, entry.shape)


def _payload(job: MergeJob, spec: OutputSpec, touched: set[str]) -> Payload:
    entry = job.base.entries[spec.name]
    if spec.name not in touched:
        return entry if spec.dtype == entry.dtype else job.base.read(spec.name).to(job.out_dtype)
    base = job.base.read(spec.name)
    _check_base_copies(job.adapters, spec.name, base)
    merged = merged_weight(
        spec.name, job.adapters, job.plan, base, job.out_dtype, job.method, job.params
    )
    if not all_finite(merged):
        raise MergeError(
            f"{spec.name}: merged tensor overflows {job.out_dtype} (Inf/NaN); use --dtype fp32 or smaller weights"
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
