"""Report sections on what the merge did inside the model: the leakage audit, the PT/SFT
delta interference and layer ablation, and the mechanism stage."""

from __future__ import annotations

from pathlib import Path

from medmerge.report.cells import plain
from medmerge.report.headline import read_json
from medmerge.report.render import Doc
from medmerge.run_layout import RunLayout


def audit(doc: Doc, run: RunLayout) -> None:
    report = read_json(run.folder("audit") / "leakage.json")
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
                plain(s["exact_duplicate_pct"]),
                s["with_overlap"],
                plain(s["with_overlap_pct"]),
                plain(s["mean_overlap"]),
            ]
            for f, s in report["eval"].items()
        ],
    )
    doc.p("Training files: " + ", ".join(Path(f).name for f in report["train"]))


def diagnostics(doc: Doc, run: RunLayout) -> None:
    diag = read_json(run.folder("diagnose") / "diagnostics.json")
    if not diag:
        return
    doc.h2("Interference between the PT and SFT deltas")
    doc.how_to_read(
        "One cell per layer and module: the deltas' relative sizes, their cosine and subspace "
        "overlap; a cosine near 0 means the two adapters change the weights in unrelated ways."
    )
    for key, name in diag["heatmaps"].items():
        doc.image(run.folder("diagnose") / name, key, half=True)
    if diag["ablation"]:
        doc.h2("Layer-wise ablation: which layers wake the thinking up")
        doc.how_to_read(
            "The PT delta applied on one layer range only: the think-tag and marker rates (shares "
            "0–1) and BLEU-4 (0–100) it gives show which layers carry the thinking habit."
        )
        doc.image(run.folder("diagnose") / "ablation.png", "PT delta on one layer range only")
        cols = list(diag["ablation"][0])
        doc.table(cols, [[plain(r[c]) for c in cols] for r in diag["ablation"]])
    cols = ["tensor", "rel_first", "rel_second", "cosine", "subspace_overlap"]
    doc.details(
        "per-tensor interference table",
        "\n".join(" ".join(plain(r[c]) for c in cols) for r in diag["interference"]),
    )


def mechanism(doc: Doc, run: RunLayout) -> None:
    folder = run.folder("mechanism")
    result = read_json(folder / "mechanism.json")
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
