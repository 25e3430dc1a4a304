"""The pipeline's eval stage: the exported merged checkpoint on the sweep's suites.

The stage builds its model with `load_backend`, so `backend: vllm` (and the other engine
settings) in the sweep YAML apply to it as they do to the sweep. What it evaluates is given
by the caller (`rows_of`), so the sweep's suite evaluators stay in sweep/ and eval/ does not
import back from there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.config import StageConfig
from medmerge.eval.backends import Backend, load_backend
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.manifest import write_manifest

# (the backend serving the checkpoint, EvalStageConfig.suites) -> the result rows
RowsOf = Callable[[Backend, dict[str, Any]], list[dict[str, Any]]]


class EvalStageConfig(StageConfig):
    """The checkpoint to evaluate, how to run it, what to evaluate and where to write."""

    model: str
    engine: EngineSettings = Field(default_factory=EngineSettings)
    suites: dict[str, Any]  # the suites, templates and decodings, as `rows_of` reads them
    data: list[str] = Field(
        default_factory=list
    )  # the data files the suites read (never replaced by `force`)
    out: str
    force: bool = False


def run_eval_stage(cfg: EvalStageConfig, rows_of: RowsOf) -> int:
    """Evaluate `cfg.model` and write results.json and a manifest into `cfg.out`."""
    rows = rows_of(load_backend(ModelSpec(model=cfg.model), cfg.engine), cfg.suites)
    with staged_output(cfg.out, force=cfg.force, inputs=[cfg.model, *cfg.data]) as folder:
        atomic_write_json(folder / "results.json", {"model": cfg.model, "rows": rows})
        write_manifest(folder, "eval", {"config": cfg.model_dump()})
    return 0
