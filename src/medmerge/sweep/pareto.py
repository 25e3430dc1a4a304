"""The Pareto front of a sweep table and the recommended weight under user constraints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmerge.eval.metrics import pareto_objectives
from medmerge.sweep.config import Recommendation


def _value(row: dict[str, Any], metric: str) -> float | None:
    value = row.get(metric)
    return None if value is None else float(value)


def dominates(a: dict[str, Any], b: dict[str, Any], objectives: Sequence[tuple[str, int]]) -> bool:
    """a is at least as good as b everywhere and strictly better somewhere."""
    pairs = [(_value(a, m), _value(b, m), sign) for m, sign in objectives]
    pairs = [(x * s, y * s) for x, y, s in pairs if x is not None and y is not None]
    return bool(pairs) and all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def pareto_front(
    rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, int]] | None = None
) -> list[int]:
    """Indices of the rows no other row dominates; by default on the Pareto objectives of
    eval.metrics.METRICS. Metrics a row lacks are left out."""
    objectives = pareto_objectives() if objectives is None else objectives
    return [
        i
        for i, row in enumerate(rows)
        if not any(dominates(other, row, objectives) for j, other in enumerate(rows) if j != i)
    ]


def _matches(row: dict[str, Any], weights: dict[str, float]) -> bool:
    return all(abs(float(row[f"w_{k}"]) - v) < 1e-9 for k, v in weights.items())


def recommend(rows: Sequence[dict[str, Any]], rule: Recommendation) -> dict[str, Any]:
    """The row maximising the objective among those within the BLEU and think-rate limits.

    The BLEU floor is the reference point's BLEU (same template and decoding) minus bleu_drop;
    without a reference point, the best BLEU of that template and decoding.
    """
    feasible, floors = [], {}
    for row in rows:
        setting = (row["template"], row["decoding"])
        if setting not in floors:
            peers = [r for r in rows if (r["template"], r["decoding"]) == setting]
            refs = [r for r in peers if rule.reference and _matches(r, rule.reference)]
            source = refs or peers
            floors[setting] = max(_value(r, rule.bleu_metric) or 0.0 for r in source)
        bleu = _value(row, rule.bleu_metric)
        think = _value(row, rule.think_metric)
        ok_bleu = bleu is None or bleu >= floors[setting] - rule.bleu_drop
        ok_think = think is None or think <= rule.max_think
        if ok_bleu and ok_think and _value(row, rule.objective) is not None:
            feasible.append(row)
    rule_text = (
        f"maximise {rule.objective} subject to {rule.bleu_metric} >= reference - {rule.bleu_drop} "
        f"and {rule.think_metric} <= {rule.max_think}"
    )
    if not feasible:
        return {"rule": rule_text, "point": None, "feasible": 0, "bleu_floors": _floors(floors)}
    best = max(
        feasible, key=lambda r: (_value(r, rule.objective), _value(r, rule.bleu_metric) or 0)
    )
    return {
        "rule": rule_text,
        "point": best["point"],
        "weights": {k[2:]: v for k, v in best.items() if k.startswith("w_")},
        "template": best["template"],
        "decoding": best["decoding"],
        rule.objective: best[rule.objective],
        rule.bleu_metric: best.get(rule.bleu_metric),
        rule.think_metric: best.get(rule.think_metric),
        "feasible": len(feasible),
        "bleu_floors": _floors(floors),
    }


def _floors(floors: dict[tuple[str, str], float]) -> dict[str, float]:
    return {f"{t}/{d}": v for (t, d), v in floors.items()}
