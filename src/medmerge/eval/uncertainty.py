"""The `uncertainty` block of results.json: n, estimate, standard error and 95 % CI per number.

Keys are the dotted paths of the numbers they describe (`accuracy`, `metrics.raw.bleu4`,
`leakage.think_tag_rate`, `leakage.length_tokens.mean`), so `value_at(results, key)` is
the estimate. Rates (accuracy, invalid, think and marker rates) take a Wilson interval;
BLEU-4, ROUGE and lengths a seeded bootstrap over items of their mean; sacreBLEU, a corpus
metric, a bootstrap that recomputes the corpus score from the resampled sentences' counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmerge import stats
from medmerge.eval.metrics import METRICS, bleu_inputs

SETTINGS = {"level": stats.LEVEL, "resamples": stats.RESAMPLES, "seed": 0}
RATES = {
    "think_tag_rate": "has_think_tag",
    "nonempty_think_rate": "nonempty_think",
    "marker_rate": "has_marker",
}


def value_at(results: dict[str, Any], key: str) -> Any:
    """The number at a dotted path of results.json."""
    value: Any = results
    for part in key.split("."):
        value = value[part]
    return value


def _rate(flags: Sequence[Any]) -> dict[str, Any]:
    return stats.proportion(sum(bool(f) for f in flags), len(flags)).as_dict()


def _mean(values: Sequence[float]) -> dict[str, Any]:
    estimate = stats.bootstrap(stats.mean_of(values), len(values), seed=SETTINGS["seed"])
    return estimate.as_dict()


def mcq_uncertainty(records: Sequence[dict[str, Any]], mode: str) -> dict[str, dict[str, Any]]:
    """accuracy (and accuracy_norm in loglik mode) and invalid_rate with Wilson CIs."""
    block = {"accuracy": _rate([r["correct"] for r in records])}
    if mode == "loglik":
        block["accuracy_norm"] = _rate([r["correct_norm"] for r in records])
    block["invalid_rate"] = _rate([r.get("invalid", False) for r in records])
    if mode == "generate":
        block["truncated_thinking_rate"] = _rate(
            [r.get("truncated_thinking", False) for r in records]
        )
    return block


def sacrebleu_statistic(
    predictions: Sequence[str], references: Sequence[str], language: str
) -> stats.Statistic:
    """Corpus sacreBLEU of the chosen items, from each sentence's n-gram counts summed."""
    bleu, preds, refs = bleu_inputs(predictions, references, language)
    counts = np.asarray(bleu._extract_corpus_statistics(preds, [refs]), dtype=np.int64)

    def score(indices: np.ndarray) -> float:
        return float(bleu._compute_score_from_stats(counts[indices].sum(axis=0).tolist()).score)

    return score


def _metric_block(
    prefix: str,
    predictions: Sequence[str],
    references: Sequence[str],
    per_item: Sequence[dict[str, float]],
    language: str,
) -> dict[str, dict[str, Any]]:
    block = {}
    for metric in METRICS:
        if metric.sample is not None:
            block[f"{prefix}.{metric.name}"] = _mean([s[metric.name] for s in per_item])
        elif metric.name == "sacrebleu" and predictions:
            statistic = sacrebleu_statistic(predictions, references, language)
            estimate = stats.bootstrap(statistic, len(predictions), seed=SETTINGS["seed"])
            block[f"{prefix}.sacrebleu"] = estimate.as_dict()
    return block


def gen_uncertainty(
    predictions: Sequence[str],
    references: Sequence[str],
    language: str,
    items: Sequence[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Every number of `eval gen` / `score`: metrics raw and think-stripped, leak rates, lengths.

    `items` are score_outputs' per-item records (raw, no_think, prediction_no_think, leakage).
    """
    stripped = [i["prediction_no_think"] for i in items]
    block = _metric_block(
        "metrics.raw", predictions, references, [i["raw"] for i in items], language
    )
    block |= _metric_block(
        "metrics.no_think", stripped, references, [i["no_think"] for i in items], language
    )
    leaks = [i["leakage"] for i in items]
    for rate, flag in RATES.items():
        block[f"leakage.{rate}"] = _rate([lk[flag] for lk in leaks])
    if leaks:
        block["leakage.leakage_ratio"] = _mean([lk["leakage"] for lk in leaks])
        block["leakage.length_chars.mean"] = _mean([lk["chars"] for lk in leaks])
        if all("tokens" in lk for lk in leaks):
            block["leakage.length_tokens.mean"] = _mean([lk["tokens"] for lk in leaks])
    return block


def seed_spread(runs: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """The spread over sampling seeds of every number with a CI, apart from the spread over
    items: per key the values per seed, their mean, standard deviation (ddof 1), min and max."""
    spread = {}
    for key in runs[0]["uncertainty"]:
        values = [float(value_at(run, key)) for run in runs]
        spread[key] = {
            "values": values,
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": min(values),
            "max": max(values),
        }
    return {"seeds": list(seeds), "spread": spread}


def shown(results: dict[str, Any], key: str) -> str:
    """`0.664 ± 0.026` for a number of results.json (its point value when it has no CI)."""
    entry = results.get("uncertainty", {}).get(key)
    if entry is None:
        value = value_at(results, key)
        return stats.plus_minus(value, 0.0).split(" ±")[0]
    return stats.plus_minus(entry["estimate"], (entry["ci_high"] - entry["ci_low"]) / 2)
