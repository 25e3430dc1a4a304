"""The sweep stage's schema: base, adapters, a grid of weights, templates, decodings, suites."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medmerge.config import StageConfig, _resolve_paths, build_config, read_yaml
from medmerge.eval.config import Decoding, EngineSettings


class SweepAdapter(StageConfig):
    """One adapter of the sweep and its short name in tables (pt, sft)."""

    path: str
    label: str


class TemplateChoice(StageConfig):
    template: str = "qwen3"
    enable_thinking: bool = False

    @property
    def key(self) -> str:
        return f"{self.template}{'+think' if self.enable_thinking else ''}"


class DecodingChoice(Decoding):
    """A decoding preset plus the think penalty gamma (0: none) subtracted from think tokens."""

    think_penalty: float = Field(default=0.0, ge=0)
    penalize_markers: bool = True  # also single-token reasoning markers ("Therefore", "首先")


class GenSuite(StageConfig):
    """A generation set: BLEU-4, ROUGE, think rates and lengths."""

    name: str
    data: str
    format: Literal["auto", "alpaca", "sharegpt", "pubmedqa", "columns"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)
    language: Literal["auto", "en", "zh"] = "auto"
    offset: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)

    def files(self) -> list[str]:
        """The data files (or folders) this suite reads; their content keys its sweep points."""
        return [self.data]


class McqSuite(StageConfig):
    """A multiple-choice benchmark scored by log-likelihood (independent of decoding)."""

    name: str
    data: list[str] = Field(min_length=1)
    format: str = "auto"
    language: Literal["auto", "en", "zh"] = "auto"
    include_ids: list[str] = Field(default_factory=list)  # id prefixes to keep (default: all)
    exclude_ids: list[str] = Field(default_factory=list)  # id prefixes to drop, e.g. an exam
    offset: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)
    # letter: the option's letter after "Answer:" (lm-eval's MMLU style); text: the option's
    # text (HEAD-QA's and PubMedQA's lm-eval style), the one a tiny model can be scored on
    continuation: Literal["letter", "text"] = "letter"

    def files(self) -> list[str]:
        return list(self.data)


class Recommendation(StageConfig):
    """Maximise `objective` subject to bleu4 >= reference bleu4 - bleu_drop, think <= max_think."""

    objective: str = "avg_accuracy"
    reference: dict[str, float] = Field(default_factory=dict)  # e.g. {pt: 0, sft: 1}
    bleu_metric: str = "bleu4"
    bleu_drop: float = 1.0
    think_metric: str = "think_tag_rate"
    max_think: float = 0.1


class SweepSuites(StageConfig):
    gen: list[GenSuite] = Field(default_factory=list)
    mcq: list[McqSuite] = Field(default_factory=list)


class SweepConfig(EngineSettings):
    """`medmerge sweep`: every grid point evaluated with the base loaded once (no export).

    backend hf applies each point's merged delta to the weights in memory; backend vllm
    serves each point as one exact merged LoRA adapter on the base loaded once in vLLM.
    """

    path_fields = ("base", "adapters", "out")

    base: str = Field(description="base model folder")
    adapters: list[SweepAdapter] = Field(min_length=1)
    # label -> weights, or "complement" (1 - the sum of the others) for at most one adapter.
    grid: dict[str, list[float] | Literal["complement"]]
    method: str = Field(default="linear", description="merge method of every point")
    templates: list[TemplateChoice] = Field(default_factory=lambda: [TemplateChoice()])
    decodings: dict[str, DecodingChoice] = Field(
        default_factory=lambda: {"A": DecodingChoice(preset="A", max_new_tokens=64)}
    )
    suites: SweepSuites
    recommend: Recommendation = Field(default_factory=Recommendation)
    device: str = Field(default="cpu", description="auto, cpu, cuda, cuda:1")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="fp32", description="dtype the model is loaded in"
    )
    batch_size: int = Field(default=16, ge=1, description="hf: prompts per batch")
    allow_template_mismatch: bool = Field(
        default=False,
        description="evaluate with another template than the adapters were trained with (warns, recorded)",
    )
    allow_pickle: bool = Field(
        default=False,
        description="allow .bin/.pt model folders and adapters (pickles can run code)",
    )
    out: str = Field(description="sweep folder; finished points in it are skipped")
    # Discard the finished points of the sweep already in `out` and start over; the new sweep
    # replaces the old folder only once complete. Never replaces a folder that is not a sweep.
    force: bool = Field(
        default=False, description="discard the sweep folder's finished points and start over"
    )
    progress: bool = Field(default=True, description="show a progress bar")

    @model_validator(mode="after")
    def _check_grid(self) -> SweepConfig:
        labels = [a.label for a in self.adapters]
        if sorted(labels) != sorted(self.grid):
            raise ValueError(f"grid must give weights for exactly the adapters {labels}")
        if sum(v == "complement" for v in self.grid.values()) > 1:
            raise ValueError("at most one adapter's weights can be 'complement'")
        if not (self.suites.gen or self.suites.mcq):
            raise ValueError("suites needs at least one gen or mcq suite")
        return self

    def data_files(self) -> list[str]:
        """Every suite's data files, once each, in suite order."""
        suites = [*self.suites.gen, *self.suites.mcq]
        return list(dict.fromkeys(f for suite in suites for f in suite.files()))

    def weight_points(self) -> list[tuple[float, ...]]:
        """Every weight combination, one weight per adapter in `adapters` order."""
        labels = [a.label for a in self.adapters]
        free = [lb for lb in labels if self.grid[lb] != "complement"]
        points = []
        for combo in itertools.product(*(self.grid[lb] for lb in free)):
            chosen = dict(zip(free, combo, strict=True))
            rest = round(1.0 - sum(combo), 10)
            points.append(tuple(chosen.get(lb, rest) for lb in labels))
        return points


def build_sweep_config(
    config_file: str | os.PathLike | None, overrides: dict[str, Any] | None = None
) -> SweepConfig:
    """build_config for SweepConfig, with the suites' data paths also relative to the file."""
    if config_file is None:
        return build_config(SweepConfig, None, overrides)
    values = read_yaml(config_file)
    base_dir = Path(config_file).resolve().parent
    for kind in ("gen", "mcq"):
        for suite in (values.get("suites") or {}).get(kind) or []:
            if isinstance(suite, dict) and "data" in suite:
                suite["data"] = _resolve_paths(suite["data"], base_dir)
    for name in SweepConfig.path_fields:
        if name in values:
            values[name] = _resolve_paths(values[name], base_dir)
    merged = {**values, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return build_config(SweepConfig, None, merged)
