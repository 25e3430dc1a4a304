"""Per-item scores of one model on a generation and a multiple-choice suite, their CIs, and
paired tests between two models on the same items.

The headline comparison and the pipeline-mistakes section need more than a table row: each
metric's per-item values, so that a difference between two models is paired_record on the items
they share (exact McNemar for a yes/no per item with one seed, a paired bootstrap for the
rest; stats.py). A sampled decoding is repeated over seeds; an item's value is then its mean
over the seeds, the CI is over items, and the per-seed metrics give the spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from medmerge import stats
from medmerge.data.templates import get_template
from medmerge.eval.backends import Backend
from medmerge.eval.config import EngineSettings
from medmerge.eval.generation import generate_answers, score_outputs
from medmerge.eval.mcq import FORMATS, McqTask, score_loglik
from medmerge.sweep.config import DecodingChoice, GenSuite, McqSuite, SweepAdapter, TemplateChoice
from medmerge.sweep.evaluate import LoadedGen, LoadedMcq

# name -> (label, unit, higher is better, a per-item reader of score_outputs' items)
GEN_METRICS: dict[str, tuple[str, str, bool | None, Any]] = {
    "bleu4": ("BLEU-4", "0–100", True, lambda i: i["raw"]["bleu4"]),
    "rougeL": ("ROUGE-L", "0–100", True, lambda i: i["raw"]["rougeL"]),
    "think_tag_rate": (
        "think-tag rate",
        "share",
        False,
        lambda i: float(i["leakage"]["has_think_tag"]),
    ),
    "marker_rate": (
        "reasoning-marker rate",
        "share",
        False,
        lambda i: float(i["leakage"]["has_marker"]),
    ),
    "answer_tokens": ("answer length", "tokens", None, lambda i: float(i["leakage"]["tokens"])),
}
MCQ_METRICS: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("MCQ accuracy", "share", True),
    "accuracy_norm": ("MCQ accuracy (length-normalised)", "share", True),
}
BINARY = frozenset({"think_tag_rate", "marker_rate", "accuracy", "accuracy_norm"})
# Paired bootstraps resample often enough that Holm over a whole table (about 30 tests) can
# still call a large difference significant: the smallest p is 2 / (B + 1).
RESAMPLES = 10_000


class SuiteStageConfig(EngineSettings):
    """What the headline and mistakes stages share: the base and adapters, the sweep's first
    suites and template, how the model runs, and where the stage writes."""

    path_fields = ("base", "adapters", "out")

    base: str
    adapters: list[SweepAdapter] = Field(min_length=1)
    gen: GenSuite
    mcq: McqSuite | None = None
    template: TemplateChoice = Field(default_factory=TemplateChoice)  # the training one
    device: str = "cpu"
    dtype: str = "fp32"
    batch_size: int = 16
    out: str
    force: bool = False
    progress: bool = True


@dataclass
class Measured:
    """One model's per-item values: metric -> values over items (mean over seeds), and the
    per-seed metric values (the mean over items of each seed's run)."""

    items: dict[str, np.ndarray] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)  # the first seed's, for reading

    def summary(self, metric: str) -> dict[str, Any]:
        values = self.items[metric]
        n, seeds = len(values), len(self.per_seed.get(metric, [None]))
        if metric in BINARY and (seeds == 1 or np.ptp(values) == 0):
            # one yes/no per item; or the same share on every item over the seeds, where a
            # bootstrap's interval would collapse to a point: Wilson on the items
            estimate = stats.proportion(round(float(values.sum())), n)
        else:
            estimate = stats.bootstrap(stats.mean_of(values), n)
        return {
            "estimate": estimate.estimate,
            "ci": [estimate.ci_low, estimate.ci_high],
            "n": n,
            "method": estimate.method,
        }

    def spread(self, metric: str) -> dict[str, float] | None:
        seeds = self.per_seed.get(metric) or []
        return {"min": min(seeds), "max": max(seeds)} if len(seeds) > 1 else None


def difference(a: Measured, b: Measured, metric: str, seed: int = 0) -> stats.Difference:
    """b - a on the same items: exact McNemar for a single yes/no per item, else a paired
    bootstrap of the mean."""
    x, y = a.items[metric], b.items[metric]
    single = len(a.per_seed.get(metric, [None])) == 1 and len(b.per_seed.get(metric, [None])) == 1
    if metric in BINARY and single:
        return stats.accuracy_difference(x.astype(bool), y.astype(bool))
    return stats.paired_bootstrap(stats.mean_of(x), stats.mean_of(y), len(x), RESAMPLES, seed)


def paired_record(diff: stats.Difference) -> dict[str, Any]:
    return {
        "difference": diff.difference,
        "ci": [diff.ci_low, diff.ci_high],
        "p": diff.p_value,
        "test": "exact McNemar" if diff.test == "mcnemar_exact" else "paired bootstrap",
        "min_detectable": diff.min_detectable,
    }


def holm_adjust(entries: Sequence[dict[str, Any]], alpha: float = 0.05) -> None:
    """Write p_holm and significant into each test entry; one family: all of them."""
    for entry, adjusted in zip(entries, stats.holm([e["p"] for e in entries]), strict=True):
        entry["p_holm"] = adjusted
        entry["significant"] = adjusted < alpha


def measure_gen(
    backend: Backend,
    loaded: LoadedGen,
    choice: TemplateChoice,
    decoding: DecodingChoice,
    seeds: int = 1,
) -> Measured:
    """Generate `seeds` times (seed, seed + 1, ...) and score every item of each run."""
    template = get_template(choice.template)
    runs = []
    for k in range(seeds):
        resolved = decoding.model_copy(update={"seed": decoding.seed + k}).resolved()
        rows = generate_answers(loaded.items, backend, template, choice.enable_thinking, resolved)
        _, items = score_outputs(
            [r["prediction"] for r in rows],
            [r["reference"] for r in rows],
            loaded.suite.language,
            [r["tokens"] for r in rows],
            None,
        )
        runs.append((rows, items))
    measured = Measured(outputs=[_output(r) for r in runs[0][0]])
    for name, (*_, read) in GEN_METRICS.items():
        table = np.array([[read(i) for i in items] for _, items in runs], dtype=np.float64)
        measured.items[name] = table.mean(axis=0)
        measured.per_seed[name] = [float(row.mean()) for row in table]
    return measured


def _output(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "prediction": row["prediction"], "reference": row["reference"]}


def measure_mcq(
    backend: Backend, loaded: LoadedMcq, choice: TemplateChoice, continuation: str
) -> Measured:
    task = McqTask(
        FORMATS[loaded.language],
        get_template(choice.template),
        backend.tokenizer,
        choice.enable_thinking,
        continuation=continuation,
    )
    records = score_loglik(task, loaded.items, [[] for _ in loaded.items], backend)
    measured = Measured()
    for name, key in (("accuracy", "correct"), ("accuracy_norm", "correct_norm")):
        correct = np.array([bool(r[key]) for r in records], dtype=np.float64)
        measured.items[name] = correct
        measured.per_seed[name] = [float(correct.mean())]
    return measured


def merge_measured(*parts: Measured) -> Measured:
    """One model's gen and MCQ measurements as one."""
    whole = Measured()
    for part in parts:
        whole.items.update(part.items)
        whole.per_seed.update(part.per_seed)
        whole.outputs = whole.outputs or part.outputs
    return whole
