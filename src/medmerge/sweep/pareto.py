"""The Pareto front of a sweep table and the recommended weight under user constraints.

A point beats the reference (`recommend.reference`, e.g. pt=0) only when a paired test on
the items both answered says so: exact McNemar on the MCQ items behind an accuracy
objective, at the 5 % level. Otherwise the recommendation stays at the reference and says
"not distinguishable from <reference> at n = ...". Rows carry their MCQ items' correctness
in `_correct` (dropped before the table is written).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmerge import stats
from medmerge.eval.metrics import pareto_objectives
from medmerge.sweep.config import Recommendation

ALPHA = 0.05


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
    best, test = _tested_against_reference(best, rows, feasible, rule)
    return {
        "paired_test": test,
        "warnings": bleu_power_warnings(rows, rule),
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


def paired_accuracy_test(point: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any] | None:
    """Exact McNemar of a point's MCQ items against the reference's; None without items."""
    a, b = reference.get("_correct"), point.get("_correct")
    if not a or not b or len(a) != len(b):
        return None
    diff = stats.accuracy_difference(a, b)
    return {"reference": reference["point"], **diff.as_dict()}


def _tested_against_reference(
    best: dict[str, Any], rows: Sequence[dict[str, Any]], feasible: list, rule: Recommendation
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best feasible point if a paired test says it beats the reference, else the
    reference (when it is feasible), with the test and a sentence saying which."""
    refs = [
        r
        for r in rows
        if rule.reference
        and _matches(r, rule.reference)
        and (r["template"], r["decoding"]) == (best["template"], best["decoding"])
    ]
    if not refs:
        return best, {"verdict": "no reference point given (recommend.reference): untested"}
    reference = refs[0]
    if reference is best:
        return best, {"verdict": "the reference itself is best"}
    if "accuracy" not in rule.objective:
        return best, {"verdict": f"no paired test for objective {rule.objective}: untested"}
    test = paired_accuracy_test(best, reference)
    if test is None:
        return best, {"verdict": "per-item results missing (cached points): rerun with --force"}
    if test["p_value"] < ALPHA and test["difference"] > 0:
        verdict = (
            f"better than {reference['point']} at n = {test['n']} "
            f"(McNemar p = {test['p_value']:.3g})"
        )
        return best, {**test, "verdict": verdict}
    verdict = (
        f"{best['point']} is not distinguishable from {reference['point']} at n = {test['n']} "
        f"(difference {test['difference']:+.3f}, McNemar p = {test['p_value']:.3g}, minimum "
        f"detectable {test['min_detectable']:.3f}); keeping {reference['point']}"
    )
    chosen = reference if reference in feasible else best
    return chosen, {**test, "candidate": best["point"], "verdict": verdict}


def bleu_power_warnings(rows: Sequence[dict[str, Any]], rule: Recommendation) -> list[str]:
    """The BLEU floor asks for a resolution (bleu_drop) finer than the points' own CIs."""
    widths = [
        (row[f"{rule.bleu_metric}_hi"] - row[f"{rule.bleu_metric}_lo"]) / 2
        for row in rows
        if row.get(f"{rule.bleu_metric}_hi") is not None
    ]
    if not widths or min(widths) <= rule.bleu_drop:
        return []
    return [
        f"the {rule.bleu_metric} 95% CI half-width is at least ±{min(widths):.2f} at these n, "
        f"wider than bleu_drop {rule.bleu_drop}: the BLEU floor cannot tell the points apart; "
        "use more generation items or a larger bleu_drop"
    ]


def against_reference(rows: Sequence[dict[str, Any]], rule: Recommendation) -> None:
    """Each row's paired test against the reference of its template and decoding, as
    `vs_reference_diff` / `vs_reference_p` (exact McNemar on the MCQ items; None without a
    reference or per-item results) and `vs_reference` (better, worse, or not distinguishable
    at 5 %)."""
    for row in rows:
        refs = [
            r
            for r in rows
            if rule.reference
            and _matches(r, rule.reference)
            and (r["template"], r["decoding"]) == (row["template"], row["decoding"])
        ]
        test = paired_accuracy_test(row, refs[0]) if refs and refs[0] is not row else None
        row["vs_reference_diff"] = test["difference"] if test else None
        row["vs_reference_p"] = test["p_value"] if test else None
        if test is None:
            row["vs_reference"] = None
        elif test["p_value"] >= ALPHA:
            row["vs_reference"] = f"not distinguishable at n = {test['n']}"
        else:
            row["vs_reference"] = "better" if test["difference"] > 0 else "worse"
