"""The verify stage's schema: which merged folder, against which base and intended adapters."""

from __future__ import annotations

from pydantic import Field

from medmerge.config import StageConfig
from medmerge.merge.config import AdapterWeight


class VerifyConfig(StageConfig):
    """`medmerge verify`: check a merged checkpoint tensor by tensor, by behaviour and provenance.

    `adapters` default to the merged folder's manifest; giving them checks merges from other tools.
    """

    path_fields = ("base", "merged", "adapters", "report")

    base: str
    merged: str
    adapters: list[AdapterWeight] = Field(default_factory=list)
    method: str | None = None  # default: the manifest's, else linear
    template: str | None = None  # the template evaluation will use; checked against the adapters'
    enable_thinking: bool | None = None
    sample: int | None = Field(
        default=None, ge=1
    )  # check only this many touched/untouched tensors each
    logits: bool = True  # behaviour check: loads both models into memory
    probe_prompts: int = Field(default=4, ge=1)
    report: str | None = None  # verify.json path; default <merged>/verify.json
    allow_pickle: bool = False
