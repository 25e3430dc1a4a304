"""The merge stage's schema: which adapters, with which weights, how, and where to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medmerge.config import StageConfig


class AdapterWeight(StageConfig):
    """One adapter folder and the weight its delta enters the merge with."""

    path: str
    weight: float


class LayerRange(StageConfig):
    """Weights that apply to the layers first..last (inclusive) only, one per adapter."""

    first: int = Field(ge=0)
    last: int = Field(ge=0)
    weights: list[float]


class MergeConfig(StageConfig):
    """`medmerge merge`: W' = W + sum_i w_i * s_i * B_i @ A_i, exported as a checkpoint or adapter."""

    path_fields = ("base", "adapters", "out")

    base: str
    adapters: list[AdapterWeight] = Field(min_length=1)
    out: str
    method: str = "linear"
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    export: Literal["full", "adapter", "both"] = "full"
    # Merged-adapter export: None keeps rank sum(r_i); "auto" recompresses exactly to the
    # delta's true rank; an int truncates to that rank and reports the dropped energy.
    adapter_rank: int | Literal["auto"] | None = None
    density: float | None = Field(default=None, gt=0, le=1)  # ties / dare / magnitude_prune
    seed: int = 0  # dare's random drop mask
    # Per-module-group weights, e.g. {"attention": [0.5, 0.5], "mlp": [0.2, 0.8]}; groups are
    # "attention" (q/k/v/o projections) and "mlp" (gate/up/down), one weight per adapter.
    group_weights: dict[Literal["attention", "mlp"], list[float]] = Field(default_factory=dict)
    layer_ranges: list[LayerRange] = Field(default_factory=list)
    max_shard_size: str = "2GB"
    verify: bool = True
    force: bool = False
    allow_pickle: bool = False

    @field_validator("adapter_rank")
    @classmethod
    def _positive_rank(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("adapter_rank must be >= 1, 'auto' or unset")
        return value
