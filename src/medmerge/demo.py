"""`medmerge demo`: `medmerge run configs/pipeline.yaml` on the bundled tiny model and data.

base -> PT -> SFT -> merge -> verify -> eval -> sweep -> audit -> diagnose -> report, on CPU;
each stage is skipped when its record shows the same inputs, so a rerun only redoes what
changed (and an interrupted run carries on). Ends by printing the report's path.
"""

from __future__ import annotations

from medmerge.config import build_config
from medmerge.paths import REPO_ROOT
from medmerge.pipeline import PipelineConfig, run_pipeline


def run_demo(out_dir: str) -> int:
    cfg = build_config(PipelineConfig, REPO_ROOT / "configs" / "pipeline.yaml", {"out": out_dir})
    return run_pipeline(cfg)
