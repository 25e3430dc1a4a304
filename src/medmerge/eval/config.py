"""The evaluation stages' schemas: which model, which data, how to decode, where to write.

Each command (`eval gen`, `eval mcq`, `eval safety`, `score`) has one closed config; the
model and decoding fields they share live in two small bases.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medmerge.config import StageConfig
from medmerge.lora import AdapterWeight

# The study's presets: A greedy; B its headline sampling setting; C near-unfiltered sampling.
DECODING_PRESETS: dict[str, dict[str, float | bool]] = {
    "A": {"do_sample": False, "temperature": 1.0, "top_p": 1.0},
    "B": {"do_sample": True, "temperature": 0.6, "top_p": 0.8},
    "C": {"do_sample": True, "temperature": 1.0, "top_p": 0.95},
}


class Decoding(StageConfig):
    """A preset plus explicit overrides; `resolved()` gives the values generation uses."""

    preset: Literal["A", "B", "C"] = Field(
        default="A", description="A greedy; B T=0.6 top_p=0.8; C T=1.0 top_p=0.95"
    )
    temperature: float | None = Field(
        default=None, ge=0, description="sampling temperature (over the preset's; 0 is greedy)"
    )
    top_p: float | None = Field(
        default=None, gt=0, le=1, description="nucleus sampling mass (over the preset's)"
    )
    top_k: int | None = Field(
        default=None, ge=0, description="sample from the k likeliest tokens only"
    )
    max_new_tokens: int = Field(default=256, ge=1, description="longest answer in tokens")
    seed: int = Field(default=0, description="sampling seed")
    answer_only: bool = Field(
        default=False,
        description="forbid the think tags and reasoning markers: decode the answer alone",
    )

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
        if self.answer_only:
            values["answer_only"] = True
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

    backend: Literal["hf", "vllm"] = Field(default="hf", description="hf (transformers) or vllm")
    device: str = Field(
        default="auto", description="auto (cuda when available, else cpu), cpu, cuda, cuda:1"
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="dtype the model is loaded in"
    )
    batch_size: int = Field(
        default=8, ge=1, description="hf: prompts per batch (vLLM schedules its own)"
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="vllm: GPUs one model is split over"
    )
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1, description="vllm: share of GPU memory (default 0.9)"
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="vllm: context length (default the model's)"
    )
    allow_pickle: bool = Field(
        default=False,
        description="allow .bin/.pt model folders and adapters (pickles can run code)",
    )
    allow_hub: bool = Field(
        default=False,
        description="a model that is not a local folder may be downloaded from the model hub",
    )

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


class PromptSettings(EngineSettings):
    """How an evaluated model is prompted: the template, checked against the adapters' own."""

    template: str = Field(default="qwen3_nothink", description="chat template")
    enable_thinking: bool = Field(
        default=False, description="render the reasoning (<think>) part of the template"
    )
    allow_template_mismatch: bool = Field(
        default=False,
        description="evaluate with another template than the adapters were trained with (warns, recorded)",
    )


class EvalCommon(PromptSettings):
    """Fields every command that runs a model shares."""

    path_fields = ("model", "base", "adapters", "data", "out", "few_shot_data", "ids_file")

    model: str | None = Field(
        default=None, description="model folder (a merged checkpoint or a base alone)"
    )
    base: str | None = Field(
        default=None, description="base model folder; with --adapter, merged in memory"
    )
    adapters: list[AdapterWeight] = Field(
        default_factory=list,
        description="an adapter folder and its weight, merged into --base in memory (repeatable)",
    )
    method: str = Field(default="linear", description="merge method for --adapter")
    out: str = Field(description="results folder")
    force: bool = Field(default=False, description="replace an existing --out")
    limit: int | None = Field(
        default=None,
        ge=1,
        description="first N items only (smoke runs); eval mcq: the files of a folder take turns",
    )

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

    data: str = Field(
        description="Alpaca/ShareGPT, PubMedQA ori_pqal.json or JSON lines with prompt/reference"
    )
    format: Literal["auto", "alpaca", "sharegpt", "pubmedqa", "columns"] = Field(
        default="auto", description="the data's layout"
    )
    columns: dict[str, str] = Field(default_factory=dict)  # prompt/reference/id/system field names
    language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="sacreBLEU tokenizer: en 13a, zh zh"
    )
    decoding: Decoding = Field(default_factory=lambda: Decoding(preset="B"))
    markers: list[str] | None = Field(
        default=None, description="reasoning markers counted as leaks (default: the built-in list)"
    )
    seeds: int = Field(
        default=1,
        ge=1,
        description="sampled decodings: generate with K seeds (seed, seed+1, ...) and report "
        "the spread over seeds apart from the CI over items",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_b_unless_named(cls, values: object) -> object:
        """A decoding given in part (`--max-new-tokens 64`) keeps this command's preset B."""
        if isinstance(values, dict) and isinstance(values.get("decoding"), dict):
            values = {**values, "decoding": {"preset": "B", **values["decoding"]}}
        return values

    @model_validator(mode="after")
    def _seeds_need_sampling(self) -> GenEvalConfig:
        if self.seeds > 1 and not self.decoding.resolved()["do_sample"]:
            raise ValueError(
                f"seeds {self.seeds} repeat a sampled decoding, but this one is greedy; "
                "use decoding preset B or C (or a temperature > 0), or drop --seeds"
            )
        return self

    def seed_list(self) -> list[int]:
        return [self.decoding.seed + k for k in range(self.seeds)]


class McqEvalConfig(EvalCommon):
    """`medmerge eval mcq`: multiple-choice accuracy by log-likelihood or by generated letter."""

    data: list[str] = Field(
        min_length=1, description="files or folders (MedQA, MedMCQA, PubMedQA, MMLU, CMMLU, ...)"
    )
    format: str = Field(default="auto", description="the benchmark's layout")
    columns: dict[str, str] = Field(default_factory=dict)  # generic format's field names
    medmcqa_cop_base: Literal[0, 1] | None = Field(
        default=None,
        description="MedMCQA: whether cop counts from 0 or 1, when the file cannot tell",
    )
    mode: Literal["loglik", "generate"] = Field(
        default="loglik", description="score options by log-likelihood or generate a letter"
    )
    continuation: Literal["letter", "text"] = Field(
        default="letter", description="what loglik scores per option"
    )
    chat: bool = Field(
        default=True, description="wrap the question in the chat template, as in training (loglik)"
    )
    task: str | None = Field(
        default=None,
        description="an lm-eval 0.4.x task name (medqa_4options, medmcqa, pubmedqa, mmlu_anatomy, "
        "cmmlu_anatomy, headqa_en, ...): its prompt, few-shot rule, acc and acc_norm",
    )
    prompt_style: Literal["medmerge", "chat", "lm-eval"] | None = Field(
        default=None,
        description="medmerge: plain text; chat: the chat template; lm-eval: --task's prompt "
        "(default: lm-eval with --task, else chat, or medmerge with --no-chat)",
    )
    language: Literal["auto", "en", "zh"] = Field(default="auto", description="prompt language")
    few_shot: int = Field(default=0, ge=0, description="exemplars per question (seeded)")
    few_shot_data: list[str] = Field(
        default_factory=list, description="exemplar pool (default: the other questions)"
    )
    seed: int = Field(default=0, description="few-shot and --sample seed")
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        description="generate mode: longest answer in tokens (default 32; 2048 with "
        "--enable-thinking, room for the reasoning)",
    )
    split: Literal["test", "train", "dev", "validation"] | None = Field(
        default=None,
        description="score one split: PubMedQA test = the official 500 test PMIDs; other "
        "data by file name (*_test.csv, test/, dev.json)",
    )
    ids_file: str | None = Field(
        default=None,
        description="score only these ids: JSON object keyed by id (test_ground_truth.json), "
        "JSON list, or one id per line",
    )
    sample: int | None = Field(
        default=None, ge=1, description="score N items drawn at random with --seed"
    )
    context_overflow: Literal["truncate", "refuse"] = Field(
        default="truncate",
        description="a prompt longer than the model's context: truncate it from the left "
        "(as lm-eval does; warns with the count) or refuse the run",
    )

    @model_validator(mode="after")
    def _style_fits_task(self) -> McqEvalConfig:
        style = self.style()
        if style == "lm-eval" and self.task is None:
            raise ValueError("prompt style lm-eval needs --task NAME (e.g. medqa_4options)")
        if style == "lm-eval" and self.mode != "loglik":
            raise ValueError("lm-eval tasks score by log-likelihood; drop --mode generate")
        return self

    def answer_tokens(self) -> int:
        """generate mode's max_new_tokens: as given, else 32, or 2048 when thinking."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return 2048 if self.enable_thinking else 32

    def style(self) -> str:
        """The prompt style in effect (see prompt_style)."""
        if self.prompt_style is not None:
            return self.prompt_style
        if self.task is not None:
            return "lm-eval"
        return "chat" if self.chat or self.mode == "generate" else "medmerge"


class ScoreConfig(StageConfig):
    """`medmerge score`: metrics for predictions made anywhere (JSON lines)."""

    path_fields = ("predictions", "out", "tokenizer")

    predictions: str = Field(description="JSON lines with prediction and reference")
    out: str = Field(description="results folder")
    force: bool = Field(default=False, description="replace an existing --out")
    prediction_key: str = Field(default="prediction", description="field of the model output")
    reference_key: str = Field(default="reference", description="field of the reference")
    language: Literal["auto", "en", "zh"] = Field(
        default="auto", description="sacreBLEU tokenizer: en 13a, zh zh"
    )
    tokenizer: str | None = Field(
        default=None,
        description="tokenizer folder for token lengths (default: character lengths only)",
    )
    markers: list[str] | None = Field(
        default=None, description="reasoning markers counted as leaks (default: the built-in list)"
    )


class SafetyConfig(PromptSettings):
    """`medmerge eval safety`: the bundled safety prompts answered by each model side by side."""

    path_fields = ("prompts", "out")

    models: list[ModelSpec] = Field(
        min_length=1, description="model folder (repeatable; base + adapters via --config)"
    )
    prompts: str | None = Field(
        default=None,
        description="JSON lines with id, category, language, prompt (default: bundled)",
    )
    decoding: Decoding = Field(default_factory=Decoding)
    out: str = Field(description="results folder")
    force: bool = Field(default=False, description="replace an existing --out")
