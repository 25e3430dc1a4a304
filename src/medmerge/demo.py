"""`medmerge demo`: `medmerge run configs/pipeline.yaml` on the bundled tiny model and data
(shipped in the wheel, or read from a source checkout: medmerge/paths.py).

base -> PT -> SFT -> merge -> verify -> eval -> sweep -> audit -> diagnose -> report, on CPU;
each stage is skipped when its record shows the same inputs, so a rerun only redoes what
changed (and an interrupted run carries on). Ends by printing the report's path.
"""

from __future__ import annotations

from medmerge.config import build_config
from medmerge.paths import demo_configs_dir
from medmerge.pipeline import PipelineConfig, run_pipeline


def run_demo(out_dir: str) -> int:
    cfg = build_config(PipelineConfig, demo_configs_dir() / "pipeline.yaml", {"out": out_dir})
    return run_pipeline(cfg)
