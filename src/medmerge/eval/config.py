"""The evaluation stages' schemas: which model, which data, how to decode, where to write.

Each command (`eval gen`, `eval mcq`, `eval safety`, `score`) has one closed config; the
model and decoding fields they share live in two small bases.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medmerge.config import StageConfig
from medmerge.merge.config import AdapterWeight

# The study's presets: A greedy; B its headline sampling setting; C near-unfiltered sampling.
DECODING_PRESETS: dict[str, dict[str, float | bool]] = {
    "A": {"do_sample": False, "temperature": 1.0, "top_p": 1.0},
    "B": {"do_sample": True, "temperature": 0.6, "top_p": 0.8},
    "C": {"do_sample": True, "temperature": 1.0, "top_p": 0.95},
}


class Decoding(StageConfig):
    """A preset plus explicit overrides; `resolved()` gives the values generation uses."""

    preset: Literal["A", "B", "C"] = "A"
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    max_new_tokens: int = Field(default=256, ge=1)
    seed: int = 0

    def resolved(self) -> dict[str, float | int | bool]:
        values = dict(DECODING_PRESETS[self.preset])
        if self.temperature is not None:
            values["temperature"] = self.temperature
            values["do_sample"] = self.temperature > 0
        if self.top_p is not None:
            values["top_p"] = self.top_p
        if self.top_k is not None:
            values["top_k"] = self.top_k
        values["max_new_tokens"] = self.max_new_tokens
        values["seed"] = self.seed
        return values


class ModelSpec(StageConfig):
    """A model folder, or a base plus adapters applied in memory at the given weights."""

    model: str | None = None
    base: str | None = None
    adapters: list[AdapterWeight] = Field(default_factory=list)
    method: str = "linear"
    label: str | None = None  # a short name in tables; default: the folder name

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.model is None) == (self.base is None):
            raise ValueError("give exactly one of model (a model folder) or base (+ adapters)")
        if self.model is not None and self.adapters:
            raise ValueError("adapters apply to a base; use base instead of model")
        return self


class EngineSettings(StageConfig):
    """How a model runs: the backend, and vLLM's engine settings when the backend is vllm."""

    backend: Literal["hf", "vllm"] = "hf"
    device: str = "auto"  # hf: auto is cuda when available, else cpu
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    batch_size: int = Field(default=8, ge=1)  # hf; vLLM schedules its own batches
    tensor_parallel_size: int = Field(default=1, ge=1)  # vllm: GPUs one model is split over
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)  # vllm (None: 0.9)
    max_model_len: int | None = Field(default=None, ge=1)  # vllm (None: the model's own)
    allow_pickle: bool = False  # load .bin/.pt weights (pickles can run code)
    allow_hub: bool = False  # a name that is no local folder is downloaded from the model hub

    @model_validator(mode="after")
    def _vllm_settings_need_vllm(self) -> EngineSettings:
        given = [
            name
            for name in ("gpu_memory_utilization", "max_model_len")
            if getattr(self, name) is not None
        ]
        given += ["tensor_parallel_size"] if self.tensor_parallel_size != 1 else []
        if self.backend != "vllm" and given:
            raise ValueError(
                f"{', '.join(given)} apply to backend vllm only; set backend vllm or drop them"
            )
        return self


class EvalCommon(EngineSettings):
    """Fields every command that runs a model shares."""

    path_fields = ("model", "base", "adapters", "data", "out", "few_shot_data")

    model: str | None = None
    base: str | None = None
    adapters: list[AdapterWeight] = Field(default_factory=list)
    method: str = "linear"
    template: str = "qwen3_nothink"
    enable_thinking: bool = False
    allow_template_mismatch: bool = False
    out: str
    force: bool = False
    limit: int | None = Field(default=None, ge=1)  # first N items only (smoke runs)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            model=self.model, base=self.base, adapters=self.adapters, method=self.method
        )

    @model_validator(mode="after")
    def _check_model(self) -> EvalCommon:
        self.model_spec()
        return self


class GenEvalConfig(EvalCommon):
    """`medmerge eval gen`: generate answers to a data set and score them against references."""

    data: str
    format: Literal["auto", "alpaca", "sharegpt", "pubmedqa", "columns"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict)  # prompt/reference/id/system field names
    language: Literal["auto", "en", "zh"] = "auto"
    decoding: Decoding = Field(default_factory=lambda: Decoding(preset="B"))
    markers: list[str] | None = None  # default: leakage.DEFAULT_MARKERS


class McqEvalConfig(EvalCommon):
    """`medmerge eval mcq`: multiple-choice accuracy by log-likelihood or by generated letter."""

    data: list[str] = Field(min_length=1)
    format: str = "auto"
    columns: dict[str, str] = Field(default_factory=dict)  # generic format's field names
    medmcqa_cop_base: Literal[0, 1] | None = None  # when the file cannot tell
    mode: Literal["loglik", "generate"] = "loglik"
    continuation: Literal["letter", "text"] = "letter"
    chat: bool = True  # wrap the question in the chat template, as in training
    language: Literal["auto", "en", "zh"] = "auto"
    few_shot: int = Field(default=0, ge=0)
    few_shot_data: list[str] = Field(default_factory=list)  # default: other items of the data
    seed: int = 0
    max_new_tokens: int = Field(default=32, ge=1)  # generate mode


class ScoreConfig(StageConfig):
    """`medmerge score`: metrics for predictions made anywhere (JSON lines)."""

    path_fields = ("predictions", "out", "tokenizer")

    predictions: str
    out: str
    force: bool = False
    prediction_key: str = "prediction"
    reference_key: str = "reference"
    language: Literal["auto", "en", "zh"] = "auto"
    tokenizer: str | None = None  # for token lengths; default: none (character lengths only)
    markers: list[str] | None = None


class SafetyConfig(EngineSettings):
    """`medmerge eval safety`: the bundled safety prompts answered by each model side by side."""

    path_fields = ("prompts", "out")

    models: list[ModelSpec] = Field(min_length=1)
    prompts: str | None = None  # default: the bundled resources/safety_prompts.jsonl
    template: str = "qwen3_nothink"
    enable_thinking: bool = False
    allow_template_mismatch: bool = False
    decoding: Decoding = Field(default_factory=Decoding)
    out: str
    force: bool = False
