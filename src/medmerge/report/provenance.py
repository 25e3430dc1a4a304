"""Report sections on where the models came from: the input artifacts with their hashes,
the training runs with their loss curves, and every stage's resolved config."""

from __future__ import annotations

import json
from pathlib import Path

from medmerge.manifest import read_manifest, sha256_file
from medmerge.report.cells import plain
from medmerge.report.headline import read_json
from medmerge.report.plots import plot_loss_curve
from medmerge.report.render import Doc
from medmerge.run_layout import RunLayout


def _input_row(folder: Path, weights: str) -> list[str] | None:
    manifest = read_manifest(folder) if folder.is_dir() else None
    if not manifest:
        return None
    file = folder / weights
    digest = sha256_file(file)[:16] if file.is_file() else ""
    data = manifest.get("data") if isinstance(manifest.get("data"), list) else []
    files = ", ".join(f"{Path(d['path']).name} ({d['sha256'][:12]})" for d in data)
    return [folder.name, str(folder), manifest.get("created", ""), digest, files]


def inputs(doc: Doc, run: RunLayout) -> None:
    """The artifacts of the chain with their hashes; no section when none has a manifest."""
    rows = []
    for stage, weights in (
        ("base", "model.safetensors"),
        ("pt", "adapter_model.safetensors"),
        ("sft", "adapter_model.safetensors"),
        ("merge", "model.safetensors"),
    ):
        row = _input_row(run.folder(stage), weights)
        rows += [row] if row else []
    if not rows:
        return
    doc.h2("Inputs")
    doc.how_to_read(
        "One row per artifact the run made; the sha256 prefixes identify the exact weights and "
        "data files, so two reports with the same hashes describe the same models."
    )
    doc.table(["artifact", "folder", "created", "weights sha256", "data files (sha256)"], rows)


def configs(doc: Doc, run: RunLayout) -> None:
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
            json.dumps(read_json(record)["config"], indent=1, default=str),
        )


def _loss_curve(doc: Doc, name: str, folder: Path) -> Path:
    """The adapter's loss curve drawn again from its log, titled with the folder's final name
    (a curve drawn at training time by an older medmerge names its staging folder); the
    stored PNG where there is no readable log."""
    log, stored = folder / "loss_log.jsonl", folder / "loss_curve.png"
    if doc.scratch is None or not log.is_file():
        return stored
    target = doc.scratch / folder.name / "loss_curve.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return plot_loss_curve(log, target, f"{name.upper()} loss — {folder.name}")
    except (ValueError, KeyError, TypeError):  # json's decode error is a ValueError
        return stored


def _training_row(name: str, manifest: dict) -> list[str]:
    keys = ("steps", "loss_first", "loss_last", "eval_loss_last", "template", "enable_thinking")
    return [name, *(plain(manifest.get(k)) for k in keys)]


def training(doc: Doc, run: RunLayout) -> None:
    """Each adapter's steps and losses, then its loss curves side by side."""
    folders = {name: run.folder(name) for name in ("pt", "sft")}
    manifests = {n: read_manifest(f) for n, f in folders.items() if f.is_dir()}
    curves = [(n, _loss_curve(doc, n, f)) for n, f in folders.items()]
    curves = [(n, c) for n, c in curves if c.is_file()]
    if not curves and not any(manifests.values()):
        return
    doc.h2("Training")
    doc.how_to_read(
        "Loss in nats per token against the optimizer step; a held-out loss that falls with the "
        "training loss means the adapter learned more than its training rows."
    )
    header = ["adapter", "steps", "first loss", "last loss", "held-out loss", "template"]
    doc.table(
        [*header, "enable_thinking"],
        [_training_row(n, m) for n, m in manifests.items() if m],
    )
    for name, curve in curves:
        doc.image(curve, f"{name.upper()} loss curve", half=True)
