"""Table cells for numbers with uncertainty: an estimate with its 95 % CI, a paired difference
with its Holm-adjusted test. A missing number (null in the JSON) shows as a dash."""

from __future__ import annotations

import math
from typing import Any

MISSING = "—"


def plain(value: Any) -> str:
    """A table value without uncertainty: 4 significant digits, yes/no, blank for none."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def decimals(*values: Any) -> int:
    """Decimals to read a number by (3 below 1, fewer above: BLEU 21.3, rate 0.023), set by the
    largest of `values` so an estimate and its CI bounds are written alike."""
    finite = [abs(float(v)) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    largest = max(finite, default=0.0)
    return 0 if largest >= 100 else 1 if largest >= 10 else 2 if largest >= 1 else 3


def number(value: Any, signed: bool = False, places: int | None = None) -> str:
    if value is None or isinstance(value, bool):
        return MISSING
    x = float(value)
    if not math.isfinite(x):
        return str(x)
    places = decimals(x) if places is None else places
    return f"{x:+.{places}f}" if signed else f"{x:.{places}f}"


def _with_ci(value: Any, ci: Any, signed: bool = False) -> str:
    """`value [lo, hi]`, all with one number of decimals; the bracket left out without a CI."""
    has_ci = isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci
    places = decimals(value, *(ci if has_ci else ()))
    text = number(value, signed, places)
    if has_ci:
        text += f" [{number(ci[0], signed, places)}, {number(ci[1], signed, places)}]"
    return text


def estimate(value: dict | None) -> str:
    """`estimate [lo, hi]` of a {"estimate", "ci", ...} entry."""
    if not value or value.get("estimate") is None:
        return MISSING
    return _with_ci(value["estimate"], value.get("ci"))


def p_value(p: Any) -> str:
    if p is None:
        return MISSING
    return "< 0.001" if float(p) < 0.001 else f"= {float(p):.2g}"


def is_significant(test: dict) -> bool | None:
    """The test's own verdict; from its Holm p at 0.05 where it gives none; None if neither."""
    if test.get("significant") is not None:
        return bool(test["significant"])
    return None if test.get("p_holm") is None else float(test["p_holm"]) < 0.05


def difference(test: dict | None, prefix: str = "") -> str:
    """`Δ [lo, hi]` over `p_holm …`: bold when significant, `n.s.` when not."""
    if not test or test.get("difference") is None:
        return MISSING
    delta = prefix + _with_ci(test["difference"], test.get("ci"), signed=True)
    significant = is_significant(test)
    if significant:
        delta = f"**{delta}**"
    verdict = {True: "", False: ", n.s.", None: ""}[significant]
    return f"{delta}\np_holm {p_value(test.get('p_holm'))}{verdict}"


def reversed_test(test: dict) -> dict:
    """The same test read the other way round (b − a instead of a − b)."""
    ci = test.get("ci")
    flipped = [-ci[1], -ci[0]] if isinstance(ci, list) and None not in ci else ci
    delta = test.get("difference")
    return {**test, "difference": None if delta is None else -delta, "ci": flipped}
