"""The verify stage's schema: which merged folder, against which base and intended adapters."""

from __future__ import annotations

from pydantic import Field

from medmerge.config import StageConfig
from medmerge.lora.spec import AdapterWeight


class VerifyConfig(StageConfig):
    """`medmerge verify`: check a merged checkpoint tensor by tensor, by behaviour and provenance.

    `adapters` default to the merged folder's manifest; giving them checks merges from other tools.
    """

    path_fields = ("base", "merged", "adapters", "report")

    base: str = Field(description="base model folder")
    merged: str = Field(description="merged model folder")
    adapters: list[AdapterWeight] = Field(
        default_factory=list,
        description="intended adapters and weights (default: the merged folder's manifest)",
    )
    method: str | None = Field(
        default=None, description="merge method (default: the manifest's, else linear)"
    )
    template: str | None = Field(
        default=None, description="the template evaluation will use; checked against the adapters'"
    )
    enable_thinking: bool | None = Field(
        default=None,
        description="the thinking setting evaluation will use; checked against the adapters'",
    )
    sample: int | None = Field(
        default=None, ge=1, description="check only N touched and N untouched tensors"
    )
    logits: bool = Field(default=True, description="behaviour check: loads both models into memory")
    probe_prompts: int = Field(
        default=4, ge=1, description="prompts the behaviour check compares logits on"
    )
    strict: bool = Field(
        default=False,
        description="exit 1 also when the weights are right but the merge is not exactly rounded",
    )
    report: str | None = Field(
        default=None, description="verify.json path (default: <merged>/verify.json)"
    )
    allow_pickle: bool = Field(
        default=False, description="allow .bin/.pt checkpoints (pickles can run code)"
    )
