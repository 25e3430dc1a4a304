"""Safetensors checkpoints, tensor by tensor: lazy reading (read-ahead, or one hashed pass
front to back), streamed writing, and the reusable scratch buffers both need. Shared by
merge, verify, eval and sweep."""

from medmerge.checkpoints.buffers import Scratch, freed_memory_returned
from medmerge.checkpoints.reading import (
    DTYPE_NAMES,
    DTYPES,
    INDEX_NAME,
    Checkpoint,
    TensorEntry,
    read_ahead,
    read_header,
    read_tensor,
    refuse_dangling_link,
)
from medmerge.checkpoints.writing import (
    OutputSpec,
    Payload,
    output_dtype,
    parse_size,
    plan_shards,
    shard_names,
    write_index,
    write_shard,
)

__all__ = [
    "DTYPES",
    "DTYPE_NAMES",
    "INDEX_NAME",
    "Checkpoint",
    "OutputSpec",
    "Payload",
    "Scratch",
    "TensorEntry",
    "freed_memory_returned",
    "output_dtype",
    "parse_size",
    "plan_shards",
    "read_ahead",
    "read_header",
    "read_tensor",
    "refuse_dangling_link",
    "shard_names",
    "write_index",
    "write_shard",
]
