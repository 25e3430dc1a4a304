"""`medmerge report RUN_DIR`: report.md and a self-contained report.html from the JSON the
stages wrote (images embedded as data URIs, no network). Missing stages are skipped."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pydantic import Field

from medmerge.artifacts import staged_output
from medmerge.config import StageConfig
from medmerge.errors import MedmergeError
from medmerge.eval.metrics import report_columns
from medmerge.manifest import read_manifest, write_manifest
from medmerge.report.analyses import audit, diagnostics, mechanism
from medmerge.report.cells import plain
from medmerge.report.headline import (
    TRADEOFF_HOW_TO,
    read_headline,
    read_json,
    recommendation_line,
    render_examples,
    render_first_screen,
    sweep_recommendation,
)
from medmerge.report.mistakes import render_mistakes
from medmerge.report.provenance import configs, inputs, training
from medmerge.report.render import Doc
from medmerge.run_layout import RunLayout


class ReportConfig(StageConfig):
    path_fields = ("run_dir", "out")

    run_dir: str = Field(description="a `medmerge run` folder")
    out: str | None = Field(default=None, description="report folder (default RUN_DIR/report)")
    force: bool = Field(
        default=False,
        description="replace an existing report folder (never the run folder or its stages)",
    )


def _first_screen(doc: Doc, run: RunLayout) -> None:
    headline = read_headline(run)
    if headline:
        render_first_screen(doc, run, headline, read_json(run.folder("sweep") / "table.json"))
    else:
        _headline(doc, run)
    render_mistakes(doc, run, headline)
    render_examples(doc, headline)


def _headline(doc: Doc, run: RunLayout) -> None:
    """The sweep's trade-off and recommendation, for runs without headline.json."""
    table = read_json(run.folder("sweep") / "table.json")
    if not table:
        return
    doc.h2("At a glance: the trade-off across merge weights")
    doc.how_to_read(
        TRADEOFF_HOW_TO + " The table below shows both ends of the sweep and the exported merge."
    )
    doc.image(
        run.folder("sweep") / "tradeoff.png",
        "BLEU-4, accuracy, think-tag and reasoning-marker rates against the PT weight",
    )
    _sweep_recommendation(doc, table, claim=True)
    rows = table["rows"]
    labels = table["adapters"]
    first = (rows[0]["template"], rows[0]["decoding"])
    picks = [r for r in rows if (r["template"], r["decoding"]) == first]
    weights = _exported_weights(run)
    exported = [
        r
        for r in picks
        if weights
        and all(abs(r[f"w_{lb}"] - w) < 1e-9 for lb, w in zip(labels, weights, strict=False))
    ]
    ends = [picks[0], *exported, picks[-1]]
    columns = report_columns()
    doc.table(
        ["point", *columns], [[r["point"], *(plain(r.get(c)) for c in columns)] for r in ends]
    )


def _sweep_recommendation(doc: Doc, table: dict, claim: bool) -> None:
    """The sweep's selection rule and its power warnings; with `claim`, first the weight it
    recommends, claimed only where its paired test beats the reference."""
    rec = table["recommendation"]
    verdict = (rec.get("paired_test") or {}).get("verdict")
    if claim:
        recommended = sweep_recommendation(table)
        doc.p(recommendation_line(recommended))
        verdict = None if verdict and verdict in recommended["text"] else verdict
    if rec.get("point"):
        doc.p(
            f"The sweep's rule: {rec['rule']} ({rec['template']}/{rec['decoding']}); picks "
            f"{rec['point']} of {rec['feasible']} feasible rows, {len(table['pareto'])} of them "
            "Pareto-optimal."
        )
    elif not claim:
        doc.p(f"**No weight meets the sweep's constraints** ({rec['rule']}).")
    if verdict:
        doc.p(f"**Paired test against the reference:** {verdict}.")
    for warning in rec.get("warnings") or []:
        doc.p(f"**Power:** {warning}.")


def _exported_weights(run: RunLayout) -> list[float]:
    """The merge weights of the exported checkpoint: its manifest's, else the merge record's."""
    adapters = (read_manifest(run.folder("merge")) or {}).get("adapters")
    if not adapters:
        record = read_json(run.record("merge")) or {}
        adapters = (record.get("config") or {}).get("adapters")
    return [float(a["weight"]) for a in adapters or [] if isinstance(a, dict) and "weight" in a]


def _verification(doc: Doc, run: RunLayout) -> None:
    report = read_json(run.verify_report)
    if not report:
        return
    doc.h2("Verification of the merged checkpoint")
    doc.how_to_read(
        "OK means every merged tensor is within the stated ulp of the exact fp64 merge and the "
        "logits match base + adapters; the recovered weights are what the checkpoint itself "
        "says each adapter was merged with."
    )
    behaviour = report.get("behaviour") or {}
    value = {k: plain(report.get(k)) or "—" for k in report}
    verdict = f" ({report['verdict']})" if report.get("verdict") else ""
    doc.p(
        f"**{'OK' if report.get('ok') else 'FAILED'}{verdict}** — tensors checked "
        f"{value.get('tensors_checked', '—')} (touched {value.get('tensors_touched', '—')}), "
        f"failed {value.get('tensors_failed', '—')}, max ulp error "
        f"{value.get('max_ulp_error', '—')}, logits max |diff| "
        f"{plain(behaviour.get('max_abs_diff')) or '—'}."
    )
    doc.table(
        ["adapter", "intended weight", "recovered weight"],
        [
            [Path(a["path"]).name, plain(a["intended_weight"]), plain(a["recovered_weight"])]
            for a in report.get("adapters", [])
        ],
    )
    for failure in report.get("failures", [])[:10]:
        doc.p(f"- FAIL: {failure}")


def _evaluation(doc: Doc, run: RunLayout) -> None:
    results = read_json(run.folder("eval") / "results.json")
    if not results:
        return
    doc.h2("Evaluation of the exported merged checkpoint")
    doc.how_to_read(
        "The exported checkpoint evaluated from its own folder (point estimates); the "
        "consistency line compares it with the same point of the sweep, which applied the "
        "weights in memory."
    )
    metrics = [k for k in results["rows"][0] if k not in ("raw", "template", "decoding")]
    doc.table(
        ["template", "decoding", *metrics],
        [[r["template"], r["decoding"], *(plain(r[m]) for m in metrics)] for r in results["rows"]],
    )
    table = read_json(run.folder("sweep") / "table.json")
    weights = _exported_weights(run)
    if table and weights:
        point = ",".join(f"{lb}={w:.4g}" for lb, w in zip(table["adapters"], weights, strict=False))
        doc.p(_consistency(results["rows"], table["rows"], point))


def _consistency(evaluated: list[dict], swept: list[dict], point: str) -> str:
    diffs = []
    for row in evaluated:
        match = [
            s
            for s in swept
            if s["point"] == point
            and s["template"] == row["template"]
            and s["decoding"] == row["decoding"]
        ]
        for s in match:
            diffs += [
                abs(float(row[k]) - float(s[k]))
                for k in s
                if k in row and isinstance(s[k], float) and row[k] is not None
            ]
    if not diffs:
        return f"The sweep has no point {point} to compare with."
    return (
        f"Consistency: the sweep point {point} (weights applied in memory) and this "
        f"exported checkpoint agree on {len(diffs)} metrics, max |difference| {max(diffs):.3g}."
    )


def _sweep(doc: Doc, run: RunLayout) -> None:
    table = read_json(run.folder("sweep") / "table.json")
    if not table:
        return
    rows = table["rows"]
    doc.h2("Sweep: every point")
    doc.how_to_read(
        "One row per merge point, template and decoding, point estimates only (their CIs are "
        "the bands of the trade-off plot); pareto = no other row is better on every objective."
    )
    if read_headline(run):
        _sweep_recommendation(doc, table, claim=False)
    bench = [k for k in rows[0] if k.endswith(".accuracy")]
    cols = ["point", "template", "decoding", *report_columns(), *bench, "pareto"]
    doc.table(cols, [[plain(r.get(c)) for c in cols] for r in rows])
    decodings = list(dict.fromkeys(r["decoding"] for r in rows))
    if len(decodings) > 1:
        _sensitivity(doc, rows, decodings)


def _sensitivity(doc: Doc, rows: list[dict], decodings: list[str]) -> None:
    doc.h2("Decoding sensitivity and the think penalty")
    doc.how_to_read(
        "BLEU-4 (0–100) and think-tag rate (share 0–1) of each point under each decoding; "
        "a large change across decodings means the point's score depends on how it is decoded."
    )
    points = list(dict.fromkeys(r["point"] for r in rows))
    lookup = {(r["point"], r["decoding"]): r for r in rows}
    header = ["point"] + [f"{d} {m}" for d in decodings for m in ("bleu4", "think")]
    body = []
    for p in points:
        cells = []
        for d in decodings:
            r = lookup.get((p, d), {})
            cells += [plain(r.get("bleu4")), plain(r.get("think_tag_rate"))]
        body.append([p, *cells])
    doc.table(header, body)
    doc.p(
        "A decoding with a think penalty lowers the scores of `<think>`, `</think>` and "
        "one-token reasoning markers by gamma at every step; compare its BLEU-4 with the "
        "same preset's without the penalty."
    )


SECTIONS = (
    _first_screen,
    inputs,
    training,
    _verification,
    _evaluation,
    _sweep,
    audit,
    diagnostics,
    mechanism,
    configs,
)


def build_report(cfg: ReportConfig) -> int:
    layout = RunLayout.of(cfg.run_dir)
    run = layout.root
    if not run.is_dir():
        raise MedmergeError(f"{run}: run folder not found; pass the `out` folder of `medmerge run`")
    folders = [f for f in layout.stage_folders() if f != layout.folder("report")]
    if not any(f.is_dir() for f in folders):
        raise MedmergeError(
            f"{run}: no stage outputs here (none of {', '.join(f.name for f in folders)}); "
            "pass the `out` folder of `medmerge run`"
        )
    out = Path(cfg.out) if cfg.out else layout.folder("report")
    with tempfile.TemporaryDirectory(prefix="medmerge-report-") as scratch:
        doc = Doc(f"medmerge report — {run.name}", scratch=Path(scratch))
        for section in SECTIONS:
            section(doc, layout)
        with staged_output(out, cfg.force, inputs=[run], stage="report") as folder:
            for source, name in doc.images:
                shutil.copyfile(source, folder / name)
            (folder / "report.md").write_text(doc.markdown(), "utf-8")
            (folder / "report.html").write_text(doc.html(), "utf-8")
            write_manifest(folder, "report", {"config": cfg.model_dump()})
    print(f"report: {out / 'report.html'} (and report.md)")
    return 0
