"""`medmerge report RUN_DIR`: report.md and a self-contained report.html from the JSON the
stages wrote (images embedded as data URIs, no network). Missing stages are skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field

from medmerge.artifacts import staged_output
from medmerge.config import StageConfig
from medmerge.errors import MedmergeError
from medmerge.eval.metrics import report_columns
from medmerge.manifest import read_manifest, sha256_file, write_manifest
from medmerge.report.headline import (
    TRADEOFF_HOW_TO,
    read_headline,
    render_examples,
    render_first_screen,
)
from medmerge.report.mistakes import render_mistakes
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


def _json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _first_screen(doc: Doc, run: RunLayout) -> None:
    headline = read_headline(run)
    if headline:
        render_first_screen(doc, run, headline, _json(run.folder("sweep") / "table.json"))
    else:
        _headline(doc, run)
    render_mistakes(doc, run, headline)
    render_examples(doc, headline)


def _headline(doc: Doc, run: RunLayout) -> None:
    """The sweep's trade-off and recommendation, for runs without headline.json."""
    table = _json(run.folder("sweep") / "table.json")
    if not table:
        return
    doc.h2("At a glance: the trade-off across merge weights")
    doc.how_to_read(
        TRADEOFF_HOW_TO + " The table below shows both ends of the sweep and the exported merge."
    )
    doc.image(
        run.folder("sweep") / "tradeoff.png",
        "BLEU-4, accuracy and think rate against the PT weight",
    )
    _sweep_recommendation(doc, table, "Recommended")
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
    doc.table(["point", *columns], [[r["point"], *(_fmt(r.get(c)) for c in columns)] for r in ends])


def _sweep_recommendation(doc: Doc, table: dict, claim: str) -> None:
    """The sweep's own selection rule, its paired test against the reference and power."""
    rec = table["recommendation"]
    if rec.get("point"):
        doc.p(
            f"**{claim}:** {rec['point']} ({rec['template']}/{rec['decoding']}) — "
            f"{rec['rule']}; {len(table['pareto'])} Pareto-optimal rows, "
            f"{rec['feasible']} feasible."
        )
    else:
        doc.p(f"**No weight meets the constraints** ({rec['rule']}).")
    verdict = (rec.get("paired_test") or {}).get("verdict")
    if verdict:
        doc.p(f"**Paired test against the reference:** {verdict}.")
    for warning in rec.get("warnings") or []:
        doc.p(f"**Power:** {warning}.")


def _exported_weights(run: RunLayout) -> list[float]:
    """The merge weights of the exported checkpoint: its manifest's, else the merge record's."""
    adapters = (read_manifest(run.folder("merge")) or {}).get("adapters")
    if not adapters:
        record = _json(run.record("merge")) or {}
        adapters = (record.get("config") or {}).get("adapters")
    return [float(a["weight"]) for a in adapters or [] if isinstance(a, dict) and "weight" in a]


def _inputs(doc: Doc, run: RunLayout) -> None:
    doc.h2("Inputs")
    doc.how_to_read(
        "One row per artifact the run made; the sha256 prefixes identify the exact weights and "
        "data files, so two reports with the same hashes describe the same models."
    )
    rows = []
    for stage, weights in (
        ("base", "model.safetensors"),
        ("pt", "adapter_model.safetensors"),
        ("sft", "adapter_model.safetensors"),
        ("merge", "model.safetensors"),
    ):
        folder = run.folder(stage)
        manifest = read_manifest(folder) if folder.is_dir() else None
        if not manifest:
            continue
        file = folder / weights
        digest = sha256_file(file)[:16] if file.is_file() else ""
        data = manifest.get("data") if isinstance(manifest.get("data"), list) else []
        files = ", ".join(f"{Path(d['path']).name} ({d['sha256'][:12]})" for d in data)
        rows.append([folder.name, str(folder), manifest.get("created", ""), digest, files])
    doc.table(["artifact", "folder", "created", "weights sha256", "data files (sha256)"], rows)


def _configs(doc: Doc, run: RunLayout) -> None:
    # a stage's `.pending.json` is its record while it runs (the report's own, here)
    records = sorted(r for r in run.records.glob("*.json") if not r.name.endswith(".pending.json"))
    if records:
        doc.h2("Appendix: resolved configs of every stage")
        doc.how_to_read(
            "Each stage's full configuration after defaults and overrides; open one to see "
            "exactly what that stage ran with."
        )
    for record in records:
        doc.details(
            f"config of stage {record.stem}",
            json.dumps(_json(record)["config"], indent=1, default=str),
        )


def _training(doc: Doc, run: RunLayout) -> None:
    doc.h2("Training")
    doc.how_to_read(
        "Loss in nats per token against the optimizer step; a held-out loss that falls with the "
        "training loss means the adapter learned more than its training rows."
    )
    rows = []
    for name in ("pt", "sft"):
        manifest = read_manifest(run.folder(name)) if run.folder(name).is_dir() else None
        if manifest:
            rows.append(
                [
                    name,
                    manifest.get("steps"),
                    _fmt(manifest.get("loss_first")),
                    _fmt(manifest.get("loss_last")),
                    _fmt(manifest.get("eval_loss_last")),
                    manifest.get("template"),
                    manifest.get("enable_thinking"),
                ]
            )
        doc.image(run.folder(name) / "loss_curve.png", f"{name.upper()} loss curve")
    doc.table(
        [
            "adapter",
            "steps",
            "first loss",
            "last loss",
            "held-out loss",
            "template",
            "enable_thinking",
        ],
        [[_fmt(v) for v in r] for r in rows],
    )


def _verification(doc: Doc, run: RunLayout) -> None:
    report = _json(run.verify_report)
    if not report:
        return
    doc.h2("Verification of the merged checkpoint")
    doc.how_to_read(
        "OK means every merged tensor is within the stated ulp of the exact fp64 merge and the "
        "logits match base + adapters; the recovered weights are what the checkpoint itself "
        "says each adapter was merged with."
    )
    behaviour = report.get("behaviour") or {}
    doc.p(
        f"**{'OK' if report.get('ok') else 'FAILED'}** — tensors checked "
        f"{report.get('tensors_checked')} (touched {report.get('tensors_touched')}), failed "
        f"{report.get('tensors_failed')}, max ulp error {report.get('max_ulp_error')}, logits "
        f"max |diff| {_fmt(behaviour.get('max_abs_diff'))}."
    )
    doc.table(
        ["adapter", "intended weight", "recovered weight"],
        [
            [Path(a["path"]).name, _fmt(a["intended_weight"]), _fmt(a["recovered_weight"])]
            for a in report.get("adapters", [])
        ],
    )
    for failure in report.get("failures", [])[:10]:
        doc.p(f"- FAIL: {failure}")


def _evaluation(doc: Doc, run: RunLayout) -> None:
    results = _json(run.folder("eval") / "results.json")
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
        [[r["template"], r["decoding"], *(_fmt(r[m]) for m in metrics)] for r in results["rows"]],
    )
    table = _json(run.folder("sweep") / "table.json")
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
    table = _json(run.folder("sweep") / "table.json")
    if not table:
        return
    rows = table["rows"]
    doc.h2("Sweep: every point")
    doc.how_to_read(
        "One row per merge point, template and decoding, point estimates only (their CIs are "
        "the bands of the trade-off plot); pareto = no other row is better on every objective."
    )
    if read_headline(run):
        _sweep_recommendation(doc, table, "The sweep's rule picks (point estimates)")
    bench = [k for k in rows[0] if k.endswith(".accuracy")]
    cols = ["point", "template", "decoding", *report_columns(), *bench, "pareto"]
    doc.table(cols, [[_fmt(r.get(c)) for c in cols] for r in rows])
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
            cells += [_fmt(r.get("bleu4")), _fmt(r.get("think_tag_rate"))]
        body.append([p, *cells])
    doc.table(header, body)
    doc.p(
        "A decoding with a think penalty lowers the scores of `<think>`, `</think>` and "
        "one-token reasoning markers by gamma at every step; compare its BLEU-4 with the "
        "same preset's without the penalty."
    )


def _audit(doc: Doc, run: RunLayout) -> None:
    report = _json(run.folder("audit") / "leakage.json")
    if not report:
        return
    doc.h2(f"Leakage audit (exact duplicates, {report['ngram']}-gram overlap)")
    doc.how_to_read(
        "Counts of evaluation items that also occur in a training file, whole or by a shared "
        f"{report['ngram']}-gram; 0 in every column means the evaluation is held out."
    )
    doc.table(
        ["evaluation file", "items", "exact duplicates", "%", "with overlap", "%", "mean overlap"],
        [
            [
                Path(f).name,
                s["items"],
                s["exact_duplicates"],
                _fmt(s["exact_duplicate_pct"]),
                s["with_overlap"],
                _fmt(s["with_overlap_pct"]),
                _fmt(s["mean_overlap"]),
            ]
            for f, s in report["eval"].items()
        ],
    )
    doc.p("Training files: " + ", ".join(Path(f).name for f in report["train"]))


def _diagnostics(doc: Doc, run: RunLayout) -> None:
    diag = _json(run.folder("diagnose") / "diagnostics.json")
    if not diag:
        return
    doc.h2("Interference between the PT and SFT deltas")
    doc.how_to_read(
        "One cell per layer and module: the deltas' relative sizes, their cosine and subspace "
        "overlap; a cosine near 0 means the two adapters change the weights in unrelated ways."
    )
    for key, name in diag["heatmaps"].items():
        doc.image(run.folder("diagnose") / name, key)
    if diag["ablation"]:
        doc.h2("Layer-wise ablation: which layers wake the thinking up")
        doc.how_to_read(
            "The PT delta applied on one layer range only: the think-tag and marker rates (shares "
            "0–1) and BLEU-4 (0–100) it gives show which layers carry the thinking habit."
        )
        doc.image(run.folder("diagnose") / "ablation.png", "PT delta on one layer range only")
        cols = list(diag["ablation"][0])
        doc.table(cols, [[_fmt(r[c]) for c in cols] for r in diag["ablation"]])
    cols = ["tensor", "rel_first", "rel_second", "cosine", "subspace_overlap"]
    doc.details(
        "per-tensor interference table",
        "\n".join(" ".join(_fmt(r[c]) for c in cols) for r in diag["interference"]),
    )


def _mechanism(doc: Doc, run: RunLayout) -> None:
    folder = run.folder("mechanism")
    result = _json(folder / "mechanism.json")
    if not result:
        return
    doc.h2("Mechanism: where the merge parts from the SFT-only model")
    doc.how_to_read(
        "CKA 1 means the merged model's states at a layer are the SFT-only "
        "model's up to rotation; a probe counts only where it beats its shuffled-label control "
        "(Holm-adjusted exact McNemar); an intervention counts only where it moves the rate and "
        "random directions of the same size do not."
    )
    doc.p(result["summary"][:1].upper() + result["summary"][1:])
    doc.image(folder / "layers.png", "CKA, PCA of the merged − SFT shift, leak probes")
    if result.get("probes_skipped"):
        doc.p(result["probes_skipped"])
    if (folder / "interventions.png").exists():
        doc.image(folder / "interventions.png", "interventions vs random controls (95 % CIs)")
    lines = result.get("suppression", {}).get("lines", [])
    lines += result.get("logit_shift", {}).get("lines", [])
    for line in lines:
        doc.p(line)


SECTIONS = (
    _first_screen,
    _inputs,
    _training,
    _verification,
    _evaluation,
    _sweep,
    _audit,
    _diagnostics,
    _mechanism,
    _configs,
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
    doc = Doc(f"medmerge report — {run.name}")
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
