"""Evaluate the model as it is now (whatever weights are applied) on the sweep's suites.

The same functions `medmerge eval gen` and `eval mcq` use, so a sweep point and an exported
checkpoint evaluated with the same settings give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medmerge.data.templates import get_template
from medmerge.errors import DataError
from medmerge.eval.backends import Backend
from medmerge.eval.generation import GenItem, generate_answers, load_gen_items, score_outputs
from medmerge.eval.mcq import FORMATS, McqTask, score_loglik, summarize
from medmerge.eval.mcq_data import load_mcq
from medmerge.eval.mcq_formats import McqItem
from medmerge.eval.metrics import detect_language, table_metrics
from medmerge.sweep.config import DecodingChoice, GenSuite, McqSuite, TemplateChoice
from medmerge.sweep.mitigation import penalized_token_ids


@dataclass(frozen=True)
class LoadedGen:
    suite: GenSuite
    items: list[GenItem]


@dataclass(frozen=True)
class LoadedMcq:
    suite: McqSuite
    items: list[McqItem]
    language: str


def _window(items: list, offset: int, limit: int | None, name: str) -> list:
    chosen = items[offset : offset + limit if limit else None]
    if not chosen:
        raise DataError(f"suite {name!r}: no items left after offset {offset} and limit {limit}")
    return chosen


def load_gen_suite(suite: GenSuite) -> LoadedGen:
    items = load_gen_items(suite.data, suite.format, suite.columns)
    return LoadedGen(suite, _window(items, suite.offset, suite.limit, suite.name))


def load_mcq_suite(suite: McqSuite) -> LoadedMcq:
    items = load_mcq(suite.data, suite.format)
    kept = [i for i in items if not any(i.id.startswith(p) for p in suite.exclude_ids)]
    if suite.include_ids:
        kept = [i for i in kept if any(i.id.startswith(p) for p in suite.include_ids)]
    kept = _window(kept, suite.offset, suite.limit, suite.name)
    language = suite.language
    if language == "auto":
        language = detect_language([i.question for i in kept])
    return LoadedMcq(suite, kept, language)


def evaluate_gen(
    backend: Backend, loaded: LoadedGen, choice: TemplateChoice, decoding: DecodingChoice
) -> dict[str, Any]:
    """results.json's content of `eval gen` (n, metrics raw / no_think, leakage) + predictions."""
    template = get_template(choice.template)
    resolved = decoding.resolved()
    ids = penalized_token_ids(backend.tokenizer, decoding.penalize_markers)
    with backend.token_penalty(ids, decoding.think_penalty):
        rows = generate_answers(loaded.items, backend, template, choice.enable_thinking, resolved)
    results, _ = score_outputs(
        [r["prediction"] for r in rows],
        [r["reference"] for r in rows],
        loaded.suite.language,
        [r["tokens"] for r in rows],
        None,
    )
    predictions = [{"id": r["id"], "prediction": r["prediction"]} for r in rows]
    return {
        **results,
        "penalized_tokens": len(ids) if decoding.think_penalty else 0,
        "predictions": predictions,
    }


def evaluate_mcq(backend: Backend, loaded: LoadedMcq, choice: TemplateChoice) -> dict[str, Any]:
    """Log-likelihood accuracy as `eval mcq` computes it (chat mode, the suite's continuation)."""
    task = McqTask(
        FORMATS[loaded.language],
        get_template(choice.template),
        backend.tokenizer,
        choice.enable_thinking,
        continuation=loaded.suite.continuation,
    )
    records = score_loglik(task, loaded.items, [[] for _ in loaded.items], backend)
    summary = summarize(records, "loglik")
    summary["loglikelihoods"] = [r["loglikelihoods"] for r in records]
    summary["correct"] = [bool(r["correct"]) for r in records]  # the paired tests' input
    return summary


def flatten(
    gen: dict[str, dict[str, Any]], mcq: dict[str, dict[str, Any]]
) -> dict[str, float | None]:
    """One table row's metrics (eval.metrics.METRICS): per suite, then the averages the
    trade-off is read from."""
    row: dict[str, float | None] = {}
    errors: dict[str, float] = {}  # column -> standard error, for the averages' CIs
    shares: set[str] = set()  # columns whose CI is a proportion's (Wilson): kept in [0, 1]
    for kind, suites in (("gen", gen), ("mcq", mcq)):
        for name, res in suites.items():
            for metric in table_metrics(kind):
                column = f"{name}.{metric.name}"
                row[column] = metric.read(res)
                entry = (res.get("uncertainty") or {}).get(metric.uncertainty or "")
                if entry is not None:
                    row[f"{column}_lo"], row[f"{column}_hi"] = entry["ci_low"], entry["ci_high"]
                    errors[column] = entry["stderr"]
                    if entry.get("method") == "wilson":
                        shares.add(column)
    for metric in table_metrics():
        if metric.average:
            suites = gen if metric.suite == "gen" else mcq
            columns = [c for n in suites if (c := f"{n}.{metric.name}") in row]
            values = [row[c] for c in columns if row[c] is not None]
            row[metric.column] = sum(values) / len(values) if values else None
            if len(values) == 1 and len(columns) == 1 and columns[0] in errors:
                # one suite: the average is that suite, and so is its CI (Wilson for a rate)
                row[f"{metric.column}_lo"] = row[f"{columns[0]}_lo"]
                row[f"{metric.column}_hi"] = row[f"{columns[0]}_hi"]
            elif values and all(c in errors for c in columns):
                # the mean of independent suites: its stderr is sqrt(sum se^2) / k (normal CI),
                # a rate's kept inside [0, 1]
                half = 1.96 * sum(errors[c] ** 2 for c in columns) ** 0.5 / len(columns)
                low, high = row[metric.column] - half, row[metric.column] + half
                if shares.issuperset(columns):
                    low, high = max(0.0, low), min(1.0, high)
                row[f"{metric.column}_lo"], row[f"{metric.column}_hi"] = low, high
    return row


def suite_names(gen: Sequence[LoadedGen], mcq: Sequence[LoadedMcq]) -> list[str]:
    return [g.suite.name for g in gen] + [m.suite.name for m in mcq]
