"""The "Pipeline mistakes" section, from `<run>/mistakes/mistakes.json`: the true merge, then
each broken merge the demo made, with what its evaluation would have reported next to the true
merge's and what `verify` or the template guard said about it."""

from __future__ import annotations

from medmerge.report import cells
from medmerge.report.headline import metric_label, read_json, stage_folder
from medmerge.report.render import Doc
from medmerge.run_layout import RunLayout

HOW_TO = (
    "Each row is what the evaluation would have reported had the pipeline made that mistake "
    "(greedy decoding; estimate [95 % CI]); under each number, Δ is its paired difference from "
    "the true merge with the Holm-adjusted p (bold = significant, n.s. = not); the last "
    "columns are what `verify` or the template guard said about it, in its own words."
)
# labels for runs without headline.json to take them from
_LABELS = {
    "bleu4": "BLEU-4 (0–100)",
    "rougeL": "ROUGE-L (0–1)",
    "accuracy": "MCQ accuracy (0–1)",
    "think_tag_rate": "think-tag rate (0–1)",
    "marker_rate": "marker rate (0–1)",
    "answer_tokens": "answer length (tokens)",
}


def _metric_names(mistakes: dict) -> list[str]:
    names = list((mistakes.get("true_merge") or {}).get("metrics") or {})
    for row in mistakes.get("rows") or []:
        names += [n for n in row.get("metrics") or {} if n not in names]
    return names


def _labels(headline: dict | None) -> dict[str, str]:
    """Metric name -> header label, from headline.json's metric rows where there are any."""
    labels = dict(_LABELS)
    for metric in (headline or {}).get("metrics") or []:
        if metric.get("name"):
            labels[metric["name"]] = metric_label(metric)
    return labels


def _test_names(rows: list[dict], name: str) -> str:
    tests = {(r.get("tests") or {}).get(name, {}).get("test") for r in rows}
    return ", ".join(sorted(t for t in tests if t))


def _header(mistakes: dict, names: list[str], labels: dict[str, str]) -> list[str]:
    rows = mistakes.get("rows") or []
    header = ["evaluated as the merge"]
    for name in names:
        test = _test_names(rows, name)
        header.append(labels.get(name, name) + (f"\nΔ: {test}" if test else ""))
    return [*header, "caught by", "verdict (exit code)", "what it said"]


def _mistake_row(row: dict, names: list[str]) -> list[str]:
    what = f"\n{row['what']}" if row.get("what") else ""
    cells_ = [f"**{row.get('label') or row.get('key') or '?'}**{what}"]
    for name in names:
        value = cells.estimate((row.get("metrics") or {}).get(name))
        test = (row.get("tests") or {}).get(name)
        cells_.append(f"{value}\n{cells.difference(test, 'Δ ')}" if test else value)
    exit_code = row.get("exit_code")
    verdict = row.get("verdict") or cells.MISSING
    cells_.append(row.get("caught_by") or "nothing: not caught")
    cells_.append(verdict + (f" ({exit_code})" if exit_code is not None else ""))
    cells_.append(str(row.get("diagnosis") or cells.MISSING))
    return cells_


def mistakes_table(mistakes: dict, labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """The true merge first, then one row per mistake."""
    names = _metric_names(mistakes)
    true_merge = mistakes.get("true_merge") or {}
    first = [f"**{true_merge.get('label') or 'true merge'}**\nthe reference of every Δ"]
    first += [cells.estimate((true_merge.get("metrics") or {}).get(n)) for n in names]
    first += ["(reference)", cells.MISSING, cells.MISSING]
    rows = [first] + [_mistake_row(r, names) for r in mistakes.get("rows") or []]
    return _header(mistakes, names, labels), rows


def _claimed_line(mistakes: dict) -> str:
    claimed = mistakes.get("claimed") or {}
    weights = ", ".join(f"{k} {cells.number(w)}" for k, w in (claimed.get("weights") or {}).items())
    template = claimed.get("template") or cells.MISSING
    return f"Every row claims to be the merge {weights or cells.MISSING} under template {template}."


def render_mistakes(doc: Doc, run: RunLayout, headline: dict | None) -> None:
    mistakes = read_json(stage_folder(run, "mistakes") / "mistakes.json")
    if not mistakes:
        return
    doc.h2("Pipeline mistakes: what each would have reported")
    doc.how_to_read(HOW_TO)
    doc.p(_claimed_line(mistakes))
    doc.table(*mistakes_table(mistakes, _labels(headline)))
