"""The two interventions of `medmerge mechanism`, each next to random controls of its size.

Both run under the merged weights (the caller holds `merged`) and compare per item
with the unchanged model by exact McNemar:
- suppression: the leak rate of greedy outputs with the top-k merged − SFT shift directions
  projected out of the chosen layers, vs `controls` random k-dimensional subspaces;
- logit shift: multiple-choice accuracy with the final state moved by gamma · ū along the
  correct − wrong direction (ū: unit direction, gamma in units of the mean final-state norm),
  vs random unit directions at the same gamma. The direction is fitted on half the items and
  applied to the other half (two folds), so no item is scored by a direction it made. All
  the shifts are scored from one forward of each fold (shifted_scoring.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from medmerge.data.templates import get_template
from medmerge.errors import ConfigError
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.generation import generate_answers
from medmerge.eval.leakage import item_leakage
from medmerge.eval.mcq import FORMATS, McqTask, score_loglik
from medmerge.mechanism.config import MechanismConfig
from medmerge.mechanism.interventions import (
    mean_difference,
    random_directions,
    shift_final_state,
    suppress_subspace,
)
from medmerge.mechanism.representations import shift_pca
from medmerge.mechanism.shifted_scoring import (
    Shift,
    continuation_end_states,
    option_requests,
    shifted_hits,
)
from medmerge.stats import mcnemar_exact, proportion


def check_layer_range(cfg: MechanismConfig, n_layers: int) -> None:
    """Refuse a suppression range outside the model before any work is done."""
    layers = cfg.suppression.layers if cfg.suppression else None
    if layers and layers[1] >= n_layers:
        raise ConfigError(
            f"suppression.layers {layers[0]}..{layers[1]}: the model has {n_layers} layers "
            f"(0..{n_layers - 1}); give a range inside it"
        )


def compare_to(baseline: Sequence[bool], changed: Sequence[bool]) -> dict[str, Any]:
    """A rate under an intervention, its CI, and its paired test against the baseline."""
    rate = proportion(sum(changed), len(changed))
    return {
        **rate.as_dict(),
        "text": str(rate),
        "difference": rate.estimate - sum(baseline) / len(baseline),
        "p": mcnemar_exact(baseline, changed),
    }


def leaks(rows: list[dict[str, Any]]) -> list[bool]:
    """Per generated output: does it have a think tag or a reasoning marker?"""
    found = [item_leakage(r["prediction"]) for r in rows]
    return [bool(x["has_think_tag"] or x["has_marker"]) for x in found]


def _controls_summary(controls: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [c["estimate"] for c in controls]
    return {
        "mean": sum(rates) / len(rates),
        "min": min(rates),
        "max": max(rates),
        "significant": sum(c["p"] < 0.05 for c in controls),
    }


def suppression_rows(
    hf: HFBackend,
    cfg: MechanismConfig,
    items: list,
    states: dict[str, torch.Tensor],
    gen: tuple,
    baseline: list[bool],
    bar: Any,
) -> dict[str, Any]:
    """`baseline`: the unchanged merged model's leaks on `items` (already generated)."""
    spec = cfg.suppression
    n_layers = states["merged"].shape[0]
    first, last = spec.layers or (n_layers // 2, n_layers - 1)
    hidden = states["merged"].shape[-1]
    found = {
        layer: shift_pca(states["merged"][layer], states["sft"][layer], spec.k).directions
        for layer in range(first, last + 1)
    }

    def leak_rate_under(bases: dict[int, torch.Tensor]) -> list[bool]:
        with suppress_subspace(hf.model, bases):
            rows = generate_answers(items, hf, *gen)
        bar.advance(1)
        return leaks(rows)

    suppressed = compare_to(baseline, leak_rate_under(found))
    controls = []
    for c in range(spec.controls):
        bases = {
            layer: random_directions(spec.k, hidden, cfg.seed + 1009 * (c + 1) + layer)
            for layer in found
        }
        controls.append(compare_to(baseline, leak_rate_under(bases)))
    none = proportion(sum(baseline), len(baseline))
    summary = _controls_summary(controls)
    line = (
        f"suppressing the top-{spec.k} shift directions at layers {first}..{last}: leak rate "
        f"{suppressed['text']} vs {none} "
        f"unchanged (exact McNemar p = {suppressed['p']:.3g}); {spec.controls} random "
        f"subspaces: {summary['mean']:.3f} (range {summary['min']:.3f}-{summary['max']:.3f}, "
        f"{summary['significant']} with p < 0.05)"
    )
    return {
        "layers": [first, last],
        "k": spec.k,
        "unchanged": none.as_dict(),
        "suppressed": suppressed,
        "controls": controls,
        "controls_summary": summary,
        "lines": [line],
    }


def correctness_direction(hf: HFBackend, task: McqTask, items: list) -> torch.Tensor:
    """mean final state after a right option − after a wrong one, scaled to the states' mean
    norm (so gamma counts in units of a typical final state)."""
    right = [k in item.answers for item in items for k in range(len(task.continuations(item)))]
    states = continuation_end_states(hf, option_requests(task, items))
    mask = torch.tensor(right)
    direction = mean_difference(states[mask], states[~mask])
    return direction / direction.norm() * states.norm(dim=1).mean()


def _hits(hf: HFBackend, task: McqTask, items: list, shift: Shift) -> list[bool]:
    """Right or wrong per item, from a forward with the shift hooked onto the output layer."""
    block = shift_final_state(hf.model, *shift) if shift else contextlib.nullcontext()
    with block:
        records = score_loglik(task, items, [[] for _ in items], hf)
    return [bool(r["correct"]) for r in records]


def fold_hits(hf: HFBackend, task: McqTask, items: list, shifts: list[Shift]) -> list[list[bool]]:
    """Per shift, right or wrong per item: all shifts from one forward where the closed form
    holds (shifted_scoring.py), else a hooked forward per shift."""
    found = shifted_hits(hf, task, items, shifts)
    return found if found is not None else [_hits(hf, task, items, s) for s in shifts]


def logit_shift_rows(hf: HFBackend, cfg: MechanismConfig, loaded: Any, bar: Any) -> dict[str, Any]:
    spec = cfg.logit_shift
    template = get_template(cfg.template.template)
    task = McqTask(
        FORMATS[loaded.language],
        template,
        hf.tokenizer,
        cfg.template.enable_thinking,
        continuation=spec.continuation,
    )
    items = loaded.items
    folds = [items[0::2], items[1::2]]
    directions = [correctness_direction(hf, task, f) for f in folds]
    bar.advance(1)
    hidden = directions[0].shape[0]
    crossed = directions[::-1]  # each fold is shifted along the other fold's direction

    # random control c: per fold a random direction of that fold's norm (the same at each gamma)
    randoms = [
        [
            random_directions(1, hidden, cfg.seed + 7919 * (c + 1) + f)[0] * d.norm()
            for f, d in enumerate(directions)
        ]
        for c in range(spec.controls)
    ]
    # every run as (gamma, per-fold directions): unchanged first, then per gamma the found
    # direction and its random controls
    runs: list[tuple[float, Sequence[torch.Tensor]]] = [(0.0, crossed)]
    for gamma in spec.gammas:
        runs += [(gamma, crossed)] + [(gamma, r) for r in randoms]
    per_fold = [
        fold_hits(
            hf,
            task,
            fold,
            [(d[f], gamma * float(d[f].norm())) if gamma else None for gamma, d in runs],
        )
        for f, fold in enumerate(folds)
    ]
    bar.advance(len(runs))
    hits = [per_fold[0][k] + per_fold[1][k] for k in range(len(runs))]  # fold 0's items first
    baseline, rest = hits[0], iter(hits[1:])
    rows = []
    for gamma in spec.gammas:
        found = compare_to(baseline, next(rest))
        controls = [compare_to(baseline, next(rest)) for _ in range(spec.controls)]
        summary = _controls_summary(controls)
        rows.append({"gamma": gamma, "found": found, "controls": controls, "summary": summary})
    unchanged = proportion(sum(baseline), len(baseline))
    lines = [
        f"logit shift gamma {r['gamma']:+g}: accuracy {r['found']['text']} vs "
        f"{unchanged} unchanged (p = {r['found']['p']:.3g}); random directions "
        f"{r['summary']['mean']:.3f} (range {r['summary']['min']:.3f}-{r['summary']['max']:.3f}, "
        f"{r['summary']['significant']} with p < 0.05)"
        for r in rows
    ]
    return {"n": len(baseline), "unchanged": unchanged.as_dict(), "rows": rows, "lines": lines}
