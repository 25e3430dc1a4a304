"""The "Pipeline mistakes" section, from `<run>/mistakes/mistakes.json`: the true merge, then
each broken merge the demo made, with what its evaluation would have reported next to the true
merge's and what `verify` or the template guard said about it."""

from __future__ import annotations

from medmerge.report import cells
from medmerge.report.headline import metric_label, read_json, stage_folder
from medmerge.report.render import Doc
from medmerge.run_layout import RunLayout

HOW_TO = (
    "Each column after the first is what the evaluation would have reported had the pipeline "
    "made that mistake (greedy decoding; estimate [95 % CI]), beside the true merge's; under "
    "each number, Δ is its paired difference from the true merge with the Holm-adjusted p "
    "(bold = significant, n.s. = not). The second table says what each mistake was and what "
    "`verify` or the template guard said about it, in its own words."
)
# labels for runs without headline.json (which names each metric's unit) to take them from
_LABELS = {
    "bleu4": "BLEU-4",
    "rougeL": "ROUGE-L",
    "accuracy": "MCQ accuracy",
    "think_tag_rate": "think-tag rate",
    "marker_rate": "reasoning-marker rate",
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


def _label(row: dict) -> str:
    return f"**{row.get('label') or row.get('key') or '?'}**"


def _cell(row: dict, name: str) -> str:
    value = cells.estimate((row.get("metrics") or {}).get(name))
    test = (row.get("tests") or {}).get(name)
    return f"{value}\n{cells.difference(test, 'Δ ')}" if test else value


def mistakes_table(mistakes: dict, labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    """What each would have reported: one row per metric, the true merge's column first, then
    one column per mistake, so each number sits beside the true one."""
    rows = mistakes.get("rows") or []
    true_merge = mistakes.get("true_merge") or {}
    header = ["metric (Δ: its test)", f"{true_merge.get('label') or 'true merge'} (reference)"]
    header += [r.get("label") or r.get("key") or "?" for r in rows]
    body = []
    for name in _metric_names(mistakes):
        test = _test_names(rows, name)
        first = labels.get(name, name) + (f"\nΔ: {test}" if test else "")
        truth = cells.estimate((true_merge.get("metrics") or {}).get(name))
        body.append([first, truth, *(_cell(r, name) for r in rows)])
    return header, body


def _verdict(row: dict) -> str:
    """`**verify: WRONG** (exit 1)`; a check that passed the mistake says it was not caught."""
    caught_by, verdict = row.get("caught_by"), row.get("verdict") or cells.MISSING
    exit_code = row.get("exit_code")
    head = f"**{caught_by}: {verdict}**" if caught_by else f"{verdict}"
    head += f" (exit {exit_code})" if exit_code is not None else ""
    return head + ("\n**not caught**" if exit_code == 0 or not caught_by else "")


def _said(row: dict) -> str:
    """The checker's own words, and what medmerge said while the mistake was made (`guard`)."""
    said = str(row.get("diagnosis") or cells.MISSING)
    return said + (f"\n{row['guard']}" if row.get("guard") else "")


def checks_table(mistakes: dict) -> tuple[list[str], list[list[str]]]:
    """What each mistake was and what `verify` or the template guard said, in its own words."""
    missing = cells.MISSING
    rows = [
        [_label(r), str(r.get("what") or missing), _verdict(r), _said(r)]
        for r in mistakes.get("rows") or []
    ]
    return ["mistake", "what the pipeline did", "caught by", "what it said"], rows


def _claimed_line(mistakes: dict) -> str:
    claimed = mistakes.get("claimed") or {}
    weights = ", ".join(f"{k} {w:g}" for k, w in (claimed.get("weights") or {}).items())
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
    doc.table(*checks_table(mistakes))
