"""`medmerge mechanism`: what it reads and how far each measurement goes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medmerge.config import StageConfig
from medmerge.eval.config import EngineSettings
from medmerge.sweep.config import DecodingChoice, GenSuite, McqSuite, SweepAdapter, TemplateChoice


class Suppression(StageConfig):
    """Project the top-k directions of the merged − SFT state shift out of layers first..last."""

    layers: list[int] | None = Field(
        default=None,
        description="[first, last] decoder layers (0-based); default the last half",
    )
    k: int = Field(default=4, ge=1, description="directions per layer")
    controls: int = Field(default=5, ge=1, description="random subspaces of the same k")


class LogitShift(StageConfig):
    """Shift the final state along the correct − wrong answer direction by gamma."""

    gammas: list[float] = Field(
        default_factory=lambda: [-0.5, -0.25, 0.25, 0.5],
        description="strengths, in units of the mean final-state norm (0 is always run)",
    )
    controls: int = Field(default=5, ge=1, description="random unit directions per gamma")
    continuation: Literal["text", "letter"] = Field(
        default="text", description="score the option text or its letter"
    )


class MechanismConfig(EngineSettings):
    """Layer-wise representations of base, SFT-only, PT-only and merged weights (one base
    load), probes of leaking outputs, and interventions against random controls."""

    path_fields = ("base", "adapters", "out")

    base: str = Field(description="base model folder")
    adapters: list[SweepAdapter] = Field(min_length=2, max_length=2)  # PT, SFT
    weights: list[float] = Field(
        default_factory=lambda: [0.3, 0.7], description="the merge studied (PT, SFT)"
    )
    prompts: GenSuite = Field(description="generation suite: states, leak labels, suppression")
    mcq: McqSuite | None = Field(default=None, description="multiple choice for the logit shift")
    template: TemplateChoice = Field(default_factory=TemplateChoice)
    decoding: DecodingChoice = Field(
        default_factory=lambda: DecodingChoice(preset="A", max_new_tokens=48)
    )
    pca_k: int = Field(default=4, ge=1, description="principal directions kept per layer")
    probe_folds: int = Field(default=5, ge=2, description="cross-validation folds of a probe")
    suppression: Suppression | None = Field(default_factory=Suppression)
    logit_shift: LogitShift | None = Field(default_factory=LogitShift)
    seed: int = Field(default=0, description="seed of folds, shuffles and random controls")
    device: str = Field(default="cpu", description="cpu, cuda, cuda:1")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="fp32", description="dtype the model is loaded in"
    )
    batch_size: int = Field(default=16, ge=1, description="prompts per batch")
    out: str = Field(description="output folder")
    force: bool = Field(default=False, description="replace an existing --out")
    progress: bool = Field(default=True, description="show a progress bar")

    @model_validator(mode="after")
    def _checks(self) -> MechanismConfig:
        if len(self.weights) != 2:
            raise ValueError("weights needs one weight per adapter (PT, SFT)")
        if self.backend != "hf":
            raise ValueError(
                "mechanism needs the model's hidden states and hooks: run it with backend hf"
            )
        layers = self.suppression.layers if self.suppression else None
        if layers is not None and (len(layers) != 2 or layers[0] > layers[1] or layers[0] < 0):
            raise ValueError("suppression.layers is [first, last] with 0 <= first <= last")
        return self
