"""The report's first screen, from `<run>/headline/headline.json`: the caveat, SFT-only vs merged
vs PT-only with CIs and the paired tests of each difference, the findings, the trade-off plot
and the recommendation (a weight is claimed only where it is significantly better)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medmerge.report import cells
from medmerge.report.render import Doc
from medmerge.run_layout import STAGE_FOLDERS, RunLayout

TABLE_HOW_TO = (
    "Each cell is the estimate with its 95 % CI [lo, hi] over n held-out items (↑/↓: higher/"
    "lower is better); Δ is the paired difference against SFT-only with its 95 % CI and its "
    "Holm-adjusted p over all tests of the table; bold = significant, n.s. = not significant "
    "after Holm."
)
TRADEOFF_HOW_TO = (
    "x is the PT weight of the merge (SFT weight = 1 − x); each line is one template and "
    "decoding, its shaded band the 95 % CI of each point; y axes carry their units."
)


def stage_folder(run: RunLayout, stage: str) -> Path:
    """A stage's folder; one the run layout does not name yet is `<run>/<stage>`."""
    return run.folder(stage) if stage in STAGE_FOLDERS else run.root / stage


def read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def read_headline(run: RunLayout) -> dict | None:
    return read_json(stage_folder(run, "headline") / "headline.json")


def metric_label(metric: dict) -> str:
    """`BLEU-4 (0–100) ↑`: the metric's label, unit and better direction."""
    label = metric.get("label") or metric.get("name") or "?"
    unit = f" ({metric['unit']})" if metric.get("unit") else ""
    arrow = {True: " ↑", False: " ↓"}.get(metric.get("higher_is_better"), "")
    return f"{label}{unit}{arrow}"


def _test_of(metric: dict, reference: str, key: str) -> dict | None:
    """The test of `key` against `reference`, read as key − reference."""
    for test in metric.get("tests") or []:
        if (test.get("a"), test.get("b")) == (reference, key):
            return test
        if (test.get("a"), test.get("b")) == (key, reference):
            return cells.reversed_test(test)
    return None


def _model_cell(metric: dict, key: str) -> str:
    cell = cells.estimate((metric.get("values") or {}).get(key))
    spread = (metric.get("seed_spread") or {}).get(key)
    if spread and spread.get("min") is not None:
        places = cells.decimals(spread["min"], spread["max"])
        low, high = (cells.number(spread[k], places=places) for k in ("min", "max"))
        cell += f"\nseeds {low}–{high}"
    return cell


def _n_cell(metric: dict, keys: list[str]) -> str:
    """One n when every model was scored on the same items, else each model's n in order."""
    counts = [((metric.get("values") or {}).get(k) or {}).get("n") for k in keys]
    shown = [cells.MISSING if n is None else str(n) for n in counts]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def _tests_named(metric: dict) -> str:
    names = {t.get("test") for t in metric.get("tests") or [] if t.get("test")}
    return ", ".join(sorted(names)) or cells.MISSING


def model_table(headline: dict) -> tuple[list[str], list[list[str]]]:
    """One row per metric (× decoding): each model's estimate [CI], then each other model's
    paired difference from the first (the reference, SFT-only)."""
    models = headline.get("models") or []
    keys = [m["key"] for m in models]
    reference, others = (keys[0], keys[1:]) if keys else ("", [])
    names = {m["key"]: m.get("label") or m["key"] for m in models}
    header = ["metric", "decoding", "n", *(names[k] for k in keys)]
    header += [f"Δ {names[k]} − {names[reference]}" for k in others] + ["test"]
    rows = []
    for metric in headline.get("metrics") or []:
        row = [metric_label(metric), metric.get("decoding") or "(any)", _n_cell(metric, keys)]
        row += [_model_cell(metric, k) for k in keys]
        row += [cells.difference(_test_of(metric, reference, k)) for k in others]
        rows.append([*row, _tests_named(metric)])
    return header, rows


def _decoding(decoding: dict) -> str:
    """`sampled (preset B …)`: the name, with the description where it adds to it."""
    name, description = str(decoding.get("name")), str(decoding.get("description") or "")
    if description.startswith(name):
        return description
    return f"{name} ({description})" if description else name


def _context_line(headline: dict) -> str:
    suites = []
    for key, kind in (("gen_suite", "generation"), ("mcq_suite", "multiple choice")):
        suite = headline.get(key) or {}
        if suite.get("name"):
            suites.append(f"{kind}: {suite['name']} (n = {suite.get('n', cells.MISSING)} items)")
    decodings = [_decoding(d) for d in headline.get("decodings") or []]
    parts = [f"template {headline['template']}"] if headline.get("template") else []
    parts += suites + ([f"decodings: {'; '.join(decodings)}"] if decodings else [])
    return "Held out from every training set; " + "; ".join(parts) + "."


def recommendation_line(recommendation: dict | None) -> str:
    """The recommendation, claiming a weight only when the JSON says it is significant."""
    text = str((recommendation or {}).get("text") or "").rstrip(".")
    if not text:
        return "**No recommendation** was computed for this run."
    if recommendation.get("significant"):
        return f"**Recommended:** {text}."
    return f"**No weight is significantly better than the reference:** {text}."


def sweep_recommendation(table: dict | None) -> dict | None:
    """headline.json's `recommendation` read from the sweep's own: significant only when its
    paired test says the recommended point beats the reference."""
    rec = (table or {}).get("recommendation") or {}
    if not rec.get("point"):
        return {"text": f"no weight meets the constraints ({rec['rule']})"} if rec else None
    test = rec.get("paired_test") or {}
    p = test.get("p_value")
    significant = p is not None and p < 0.05 and (test.get("difference") or 0) > 0
    verdict = test.get("verdict")
    untested = f"the rule's pick ({rec['rule']}), not tested against the reference"
    text = f"{rec['point']} — {verdict or untested}"
    return {"text": text, "significant": significant and "candidate" not in test}


def _examples(doc: Doc, headline: dict) -> None:
    """What each model answered on the first items, side by side with the reference."""
    examples = headline.get("examples") or {}
    models = [m for m in headline.get("models") or [] if examples.get(m["key"])]
    if not models:
        return
    doc.h2("What the models answered (first items, greedy)")
    doc.how_to_read(
        "One row per held-out item: the reference answer, then each model's own output "
        "verbatim (think tags included), so the format each model learned shows directly."
    )
    first = examples[models[0]["key"]]
    rows = []
    for index, item in enumerate(first):
        answers = [
            examples[m["key"]][index] if index < len(examples[m["key"]]) else {} for m in models
        ]
        rows.append(
            [str(item.get("id", index)), str(item.get("reference", ""))]
            + [str(a.get("prediction", cells.MISSING)) for a in answers]
        )
    doc.table(["item", "reference", *(m.get("label") or m["key"] for m in models)], rows)


def render_first_screen(doc: Doc, run: RunLayout, headline: dict, sweep_table: dict | None) -> None:
    """Caveat, the three-model table, the findings, the trade-off and the recommendation
    (headline.json's, else the sweep's own paired-tested one)."""
    if headline.get("caveat"):
        doc.note(headline["caveat"])
    names = " vs ".join(m.get("label") or m["key"] for m in headline.get("models") or [])
    doc.h2(f"The headline: {names}")
    doc.how_to_read(TABLE_HOW_TO)
    doc.p(_context_line(headline))
    doc.table(*model_table(headline))
    doc.bullets([str(f) for f in headline.get("findings") or []])
    plot = stage_folder(run, "sweep") / "tradeoff.png"
    if plot.is_file():  # without a sweep the recommendation closes the headline section
        points = len({r.get("point") for r in (sweep_table or {}).get("rows") or []})
        doc.h2(f"The trade-off across {points} merge weights" if points else "The trade-off")
        doc.how_to_read(TRADEOFF_HOW_TO)
        doc.image(
            plot,
            "BLEU-4, multiple-choice accuracy, think-tag and reasoning-marker rates against the "
            "PT weight (95 % CI bands)",
        )
    recommendation = headline.get("recommendation") or sweep_recommendation(sweep_table)
    doc.p(recommendation_line(recommendation))


def render_examples(doc: Doc, headline: dict | None) -> None:
    if headline:
        _examples(doc, headline)
