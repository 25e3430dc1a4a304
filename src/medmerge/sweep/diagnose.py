"""`medmerge diagnose`: interference table and heatmaps, and the layer-wise PT ablation.

The ablation applies the SFT delta everywhere and the PT delta on one layer range only
(merge's WeightPlan layer ranges), then measures the think rate of a generation suite:
which layers wake the thinking up.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.checkpoints import Checkpoint
from medmerge.config import StageConfig
from medmerge.eval.backends import load_backend
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.lora import WeightPlan, check_shapes, load_adapter
from medmerge.manifest import write_manifest
from medmerge.progress import progress_bar
from medmerge.report.plots import plot_heatmap, plot_layer_ablation
from medmerge.sweep.config import DecodingChoice, GenSuite, SweepAdapter, TemplateChoice
from medmerge.sweep.evaluate import evaluate_gen, load_gen_suite
from medmerge.sweep.interference import as_grid, interference_table

HEATMAPS = (
    ("rel_first", "||dPT|| / ||W||", "viridis"),
    ("rel_second", "||dSFT|| / ||W||", "viridis"),
    ("cosine", "cosine(dPT, dSFT)", "coolwarm"),
    ("subspace_overlap", "column-space overlap (mean cos^2 of principal angles)", "magma"),
)


class Ablation(StageConfig):
    weights: list[float] = Field(default_factory=lambda: [0.3, 0.7])  # PT, SFT
    suite: GenSuite
    template: TemplateChoice = Field(default_factory=TemplateChoice)
    decoding: DecodingChoice = Field(
        default_factory=lambda: DecodingChoice(preset="A", max_new_tokens=48)
    )
    ranges: list[list[int]] | None = None  # [[first, last], ...]; default: each layer alone


class DiagnoseConfig(EngineSettings):
    """`medmerge diagnose`: delta norms, cosines and subspace overlap; layer ablation.

    The ablation runs on `backend` (hf or vllm) with the engine settings a sweep takes.
    """

    path_fields = ("base", "adapters", "out")

    base: str = Field(description="base model folder")
    adapters: list[SweepAdapter] = Field(min_length=2, max_length=2)
    ablation: Ablation | None = None
    device: str = Field(default="cpu", description="cpu, cuda, cuda:1")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="fp32", description="dtype the model is loaded in for the ablation"
    )
    batch_size: int = Field(default=16, ge=1, description="hf: prompts per batch in the ablation")
    out: str = Field(description="diagnostics folder")
    force: bool = Field(default=False, description="replace an existing --out")
    progress: bool = Field(default=True, description="show a progress bar")

    @model_validator(mode="after")
    def _two_weights(self) -> DiagnoseConfig:
        if self.ablation and len(self.ablation.weights) != 2:
            raise ValueError("ablation.weights needs one weight per adapter (PT, SFT)")
        return self


def _ablation_plans(ablation: Ablation, n_layers: int) -> list[tuple[str, WeightPlan]]:
    pt, sft = ablation.weights
    ranges = ablation.ranges or [[i, i] for i in range(n_layers)]
    plans = [("none", WeightPlan((0.0, sft)))]
    for first, last in ranges:
        name = f"{first}" if first == last else f"{first}-{last}"
        plans.append((name, WeightPlan((0.0, sft), layer_ranges=((first, last, (pt, sft)),))))
    plans.append(("all", WeightPlan((pt, sft))))
    return plans


def layer_count(base: str) -> int:
    """The decoder layers of `base`, from its config.json (any architecture's key for it)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base)
    return int(config.get_text_config().num_hidden_layers)


def run_ablation(cfg: DiagnoseConfig, adapters: list) -> list[dict[str, Any]]:
    ablation = cfg.ablation
    loaded = load_gen_suite(ablation.suite)
    plans = _ablation_plans(ablation, layer_count(cfg.base))
    backend = load_backend(ModelSpec(base=cfg.base), cfg, adapters)  # a linear merge
    rows = []
    with progress_bar(len(plans), "layer ablation", enabled=cfg.progress) as bar:
        for name, plan in plans:
            with backend.merged(plan):
                res = evaluate_gen(backend, loaded, ablation.template, ablation.decoding)
            leak = res["leakage"]
            rows.append(
                {
                    "layers": name,
                    "bleu4": res["metrics"]["raw"]["bleu4"],
                    "think_tag_rate": leak["think_tag_rate"],
                    "nonempty_think_rate": leak["nonempty_think_rate"],
                    "marker_rate": leak["marker_rate"],
                }
            )
            bar.advance(1)
    return rows


def _base_state(base: str) -> dict:
    from safetensors.torch import load_file

    from medmerge.manifest import weight_files

    state = {}
    for file in weight_files(base):
        state.update(load_file(str(file)))
    return state


def _write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("", encoding="utf-8")
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_diagnose(cfg: DiagnoseConfig) -> int:
    adapters = [load_adapter(a.path, cfg.allow_pickle) for a in cfg.adapters]
    check_shapes(adapters, Checkpoint(cfg.base))  # merge's own refusal of a foreign adapter
    rows = interference_table(_base_state(cfg.base), adapters)
    ablation = run_ablation(cfg, adapters) if cfg.ablation else []
    inputs = [cfg.base, *(a.path for a in cfg.adapters)]
    if cfg.ablation:
        inputs.append(cfg.ablation.suite.data)
    with staged_output(cfg.out, cfg.force, inputs=inputs) as folder:
        _write_table(folder / "interference.csv", rows)
        _write_table(folder / "ablation.csv", ablation)
        heatmaps = {}
        for key, title, cmap in HEATMAPS:
            matrix, layers, modules = as_grid(rows, key)
            if matrix:
                heatmaps[key] = f"heatmap_{key}.png"
                plot_heatmap(matrix, layers, modules, title, folder / heatmaps[key], cmap)
        if ablation:
            plot_layer_ablation(ablation, folder / "ablation.png")
        labels = [a.label for a in cfg.adapters]
        payload = {
            "adapters": labels,
            "interference": rows,
            "ablation": ablation,
            "heatmaps": heatmaps,
        }
        atomic_write_json(folder / "diagnostics.json", payload)
        write_manifest(folder, "diagnose", {"config": cfg.model_dump()})
    mean_cos = sum(r["cosine"] for r in rows) / len(rows) if rows else 0.0
    print(
        f"[diagnose] {len(rows)} tensors, mean cosine(dPT, dSFT) {mean_cos:.3f}; "
        f"ablation rows {len(ablation)} -> {cfg.out}"
    )
    return 0
