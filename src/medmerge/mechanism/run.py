"""`medmerge mechanism`: where the merged model's states part from the SFT-only model's, whether
they predict a leaking output, and whether acting on them changes behaviour beyond chance.

One base load: base, SFT-only (0, 1), PT-only (1, 0) and the merge (w_pt, w_sft) are
switched in memory (`merged`) on the transformers backend, whose model the hooks attach to.
Per decoder layer (0-based, its output at the last prompt token): linear CKA between the
models, PCA of merged − SFT, and a cross-validated probe predicting from the merged model's
prompt state whether its greedy output leaks (a think tag or a reasoning marker), next to a
shuffled-label control and tested against it by exact McNemar, Holm-adjusted over the
layers. Interventions follow (intervene.py). Everything is written to `out`: mechanism.json, layers.csv, plots.
"""

from __future__ import annotations

import contextlib
import csv
import math
from pathlib import Path
from typing import Any

import torch

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.checkpoints import Checkpoint
from medmerge.data.templates import get_template
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import ModelSpec
from medmerge.eval.generation import generate_answers
from medmerge.lora import check_shapes, load_adapter
from medmerge.manifest import write_manifest
from medmerge.mechanism.config import MechanismConfig
from medmerge.mechanism.intervene import (
    check_layer_range,
    leaks,
    logit_shift_rows,
    suppression_rows,
)
from medmerge.mechanism.interventions import decoder_layers
from medmerge.mechanism.plots import plot_interventions, plot_layers
from medmerge.mechanism.probes import probe_accuracy, shuffled
from medmerge.mechanism.representations import cka_per_layer, last_token_states, shift_pca
from medmerge.progress import progress_bar
from medmerge.stats import holm, mcnemar_exact, proportion
from medmerge.sweep.evaluate import load_gen_suite, load_mcq_suite

MODELS = ("base", "sft", "pt", "merged")
CKA_PAIRS = (("merged", "sft"), ("merged", "pt"), ("sft", "base"), ("pt", "base"))


def model_plans(weights: list[float]) -> dict[str, tuple[float, float] | None]:
    return {"base": None, "sft": (0.0, 1.0), "pt": (1.0, 0.0), "merged": tuple(weights)}


def weights_of(hf: HFBackend, plan: tuple[float, float] | None) -> Any:
    """The block in which the backend serves `plan` (None: the base as loaded)."""
    return contextlib.nullcontext() if plan is None else hf.merged(plan)


def probe_rows(states: torch.Tensor, labels: list[int], cfg: MechanismConfig) -> list[dict]:
    """Per layer: probe and shuffled-control accuracy with Wilson CIs, McNemar p (Holm)."""
    if len(set(labels)) < 2 or min(labels.count(0), labels.count(1)) < cfg.probe_folds:
        return []
    control_labels = shuffled(labels, cfg.seed)
    rows = []
    for layer in range(states.shape[0]):
        probe = probe_accuracy(states[layer], labels, cfg.probe_folds, cfg.seed)
        control = probe_accuracy(states[layer], control_labels, cfg.probe_folds, cfg.seed)
        rows.append(
            {
                "probe": proportion(probe.correct, probe.n).as_dict(),
                "control": proportion(control.correct, control.n).as_dict(),
                "majority": probe.majority,
                "p": mcnemar_exact(probe.hits, control.hits),
            }
        )
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
    return rows


def layer_table(states: dict[str, torch.Tensor], probes: list[dict], k: int) -> list[dict]:
    """One row per decoder layer (0-based); a CKA of constant states is None."""
    ckas = {f"cka_{a}_{b}": cka_per_layer(states[a], states[b]) for a, b in CKA_PAIRS}
    rows = []
    for index in range(states["merged"].shape[0]):
        pca = shift_pca(states["merged"][index], states["sft"][index], k)
        row: dict[str, Any] = {"layer": index}
        row |= {key: _defined(values[index]) for key, values in ckas.items()}
        row |= {"shift_top1_share": pca.explained[0], "shift_mean_norm": pca.mean_shift_norm}
        probe = probes[index] if probes else {}
        if probe:
            row |= {
                "probe_accuracy": probe["probe"]["estimate"],
                "probe_ci_low": probe["probe"]["ci_low"],
                "probe_ci_high": probe["probe"]["ci_high"],
                "control_accuracy": probe["control"]["estimate"],
                "p_holm": probe["p_holm"],
                "conflict": probe["p_holm"] < 0.05
                and probe["probe"]["estimate"] > probe["control"]["estimate"],
            }
        rows.append(row)
    return rows


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def write_layers_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        fields = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def step_count(cfg: MechanismConfig) -> int:
    """Steps of the progress bar: model states, the merged outputs, each intervention run."""
    steps = len(MODELS) + 1
    if cfg.suppression:
        steps += 1 + cfg.suppression.controls
    if cfg.logit_shift and cfg.mcq:
        steps += 2 + len(cfg.logit_shift.gammas) * (1 + cfg.logit_shift.controls)
    return steps


def measure(cfg: MechanismConfig, hf: HFBackend, bar: Any) -> dict[str, Any]:
    check_layer_range(cfg, len(decoder_layers(hf.model)))
    loaded = load_gen_suite(cfg.prompts)
    template = get_template(cfg.template.template)
    thinking = cfg.template.enable_thinking
    prompts = [template.render_prompt(hf.tokenizer, i.messages, thinking) for i in loaded.items]
    plans = model_plans(cfg.weights)
    states = {}
    for name in MODELS:
        with weights_of(hf, plans[name]):
            every = last_token_states(hf.model, hf.tokenizer, prompts, cfg.batch_size)
        states[name] = every[1:]  # decoder layers only: [l] is decoder layer l's output
        bar.advance(1)
    decoding = cfg.decoding.resolved()
    with hf.merged(plans["merged"]):
        rows = generate_answers(loaded.items, hf, template, thinking, decoding)
    bar.advance(1)
    leaked = leaks(rows)
    labels = [int(x) for x in leaked]
    probes = probe_rows(states["merged"], labels, cfg)
    table = layer_table(states, probes, cfg.pca_k)
    result: dict[str, Any] = {
        "n_prompts": len(prompts),
        "leaking_outputs": sum(labels),
        "layers": table,
        "probes": probes,
        "probes_skipped": None
        if probes
        else (
            f"{sum(labels)} of {len(labels)} merged outputs leak: a probe needs at least "
            f"{cfg.probe_folds} of each kind"
        ),
    }
    if cfg.suppression:
        with hf.merged(plans["merged"]):
            result["suppression"] = suppression_rows(
                hf, cfg, loaded.items, states, (template, thinking, decoding), leaked, bar
            )
    if cfg.logit_shift and cfg.mcq:
        with hf.merged(plans["merged"]):
            result["logit_shift"] = logit_shift_rows(hf, cfg, load_mcq_suite(cfg.mcq), bar)
    return result


def conflict_summary(table: list[dict]) -> str:
    flagged = [row["layer"] for row in table if row.get("conflict")]
    if flagged:
        return f"probes beat their shuffled control (Holm p < 0.05) at layers {flagged}"
    defined = [r for r in table if r["cka_merged_sft"] is not None]
    if not defined:
        return "no layer's probe beats its control at p < 0.05; CKA undefined (constant states)"
    lowest = min(defined, key=lambda r: r["cka_merged_sft"])
    return (
        f"no layer's probe beats its control at p < 0.05; merged vs SFT-only CKA is lowest "
        f"at layer {lowest['layer']} ({lowest['cka_merged_sft']:.3f})"
    )


def run_mechanism(cfg: MechanismConfig) -> int:
    adapters = [load_adapter(a.path, cfg.allow_pickle) for a in cfg.adapters]
    check_shapes(adapters, Checkpoint(cfg.base))
    hf = HFBackend.from_engine(ModelSpec(base=cfg.base), cfg, adapters)  # hooks need its model
    inputs = [cfg.base, *(a.path for a in cfg.adapters), cfg.prompts.data]
    inputs += list(cfg.mcq.data) if cfg.mcq else []
    with progress_bar(step_count(cfg), "mechanism", enabled=cfg.progress) as bar:
        result = measure(cfg, hf, bar)
    summary = conflict_summary(result["layers"])
    with staged_output(cfg.out, cfg.force, inputs=inputs, stage="mechanism") as folder:
        write_layers_csv(folder / "layers.csv", result["layers"])
        plot_layers(result["layers"], folder / "layers.png")
        if result.get("suppression") or result.get("logit_shift"):
            plot_interventions(result, folder / "interventions.png")
        atomic_write_json(folder / "mechanism.json", {**result, "summary": summary})
        write_manifest(folder, "mechanism", {"config": cfg.model_dump()})
    print(
        f"[mechanism] {result['n_prompts']} prompts, {result['leaking_outputs']} leaking: {summary}"
    )
    for line in result.get("suppression", {}).get("lines", []):
        print(f"[mechanism] {line}")
    for line in result.get("logit_shift", {}).get("lines", []):
        print(f"[mechanism] {line}")
    print(f"[mechanism] -> {cfg.out}")
    return 0
