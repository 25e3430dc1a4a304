"""The merge stage's schema: which adapters, with which weights, how, and where to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medmerge.checkpoints.writing import parse_size
from medmerge.config import StageConfig
from medmerge.lora.spec import AdapterWeight


class LayerRange(StageConfig):
    """Weights that apply to the layers first..last (inclusive) only, one per adapter."""

    first: int = Field(ge=0)
    last: int = Field(ge=0)
    weights: list[float]


class MergeConfig(StageConfig):
    """`medmerge merge`: W' = W + sum_i w_i * s_i * B_i @ A_i, exported as a checkpoint or adapter."""

    path_fields = ("base", "adapters", "out")

    base: str = Field(description="base model folder")
    adapters: list[AdapterWeight] = Field(
        min_length=1, description="an adapter folder and its merge weight (repeatable)"
    )
    out: str = Field(description="output folder")
    method: str = Field(default="linear", description="merge method")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto", description="dtype of the merged weights (auto: the base's)"
    )
    export: Literal["full", "adapter", "both"] = Field(
        default="full", description="full checkpoint, merged LoRA adapter, or both"
    )
    # Merged-adapter export: None keeps rank sum(r_i); "auto" recompresses exactly to the
    # delta's true rank; an int truncates to that rank and reports the dropped energy.
    adapter_rank: int | Literal["auto"] | None = Field(
        default=None,
        description="merged adapter rank: auto (the delta's exact rank), an integer (truncated), unset keeps sum of ranks",
    )
    density: float | None = Field(
        default=None, gt=0, le=1, description="kept fraction for ties/dare/magnitude_prune"
    )
    seed: int = Field(default=0, description="seed of dare's random drop mask")
    # Per-module-group weights, e.g. {"attention": [0.5, 0.5], "mlp": [0.2, 0.8]}, one weight
    # per adapter; which modules form each group is the base's architecture's (architectures.py).
    group_weights: dict[Literal["attention", "mlp"], list[float]] = Field(default_factory=dict)
    layer_ranges: list[LayerRange] = Field(default_factory=list)
    max_shard_size: str | None = Field(
        default=None,
        description="re-shard into files of at most this size, as transformers names it "
        "(e.g. 2GB, 500MB); unset keeps the base's shards and index",
    )
    verify: bool = Field(default=True, description="verify the merged checkpoint at the end")
    force: bool = Field(default=False, description="replace an existing --out")
    allow_pickle: bool = Field(
        default=False, description="allow .bin/.pt checkpoints (pickles can run code)"
    )

    @field_validator("max_shard_size")
    @classmethod
    def _shard_size(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                size = parse_size(value)
            except (ValueError, OverflowError):
                size = 0
            if size < 1:
                raise ValueError("max_shard_size must be a size such as 2GB, 500MB or 100KB")
        return value

    @field_validator("adapter_rank")
    @classmethod
    def _positive_rank(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("adapter_rank must be >= 1, 'auto' or unset")
        return value
