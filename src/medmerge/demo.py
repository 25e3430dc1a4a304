"""`medmerge demo`: `medmerge run configs/pipeline.yaml` on the bundled tiny model and data
(shipped in the wheel, or read from a source checkout: medmerge/paths.py).

base -> PT -> SFT -> merge -> verify -> eval -> sweep -> headline -> mistakes -> audit ->
diagnose -> mechanism -> report, on CPU; each stage is skipped when its record shows the same
inputs, so a rerun only redoes what changed (and an interrupted run carries on). Ends with
the headline table (SFT-only vs the merge vs PT-only, 95 % CIs, paired tests) and the
report's path.
"""

from __future__ import annotations

import json

from medmerge.config import build_config
from medmerge.paths import demo_configs_dir
from medmerge.pipeline import PipelineConfig, run_pipeline
from medmerge.run_layout import RunLayout
from medmerge.sweep.headline import terminal_table


def run_demo(out_dir: str) -> int:
    cfg = build_config(PipelineConfig, demo_configs_dir() / "pipeline.yaml", {"out": out_dir})
    status = run_pipeline(cfg)
    headline = RunLayout.of(cfg.out).folder("headline") / "headline.json"
    if status == 0 and headline.is_file():
        payload = json.loads(headline.read_text("utf-8"))
        print(f"\n{payload['caveat']}\n\n{terminal_table(payload)}")
        for finding in payload["findings"]:
            print(f"- {finding}")
        print(f"\nreport: {RunLayout.of(cfg.out).report_html}")
    return status
