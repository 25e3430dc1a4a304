"""What every evaluation command does around its scoring: check templates, load the model,
hash the data and write run_meta.json, predictions.jsonl and results.json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medmerge.artifacts import atomic_write_json
from medmerge.errors import ConfigError
from medmerge.eval.backends import Backend, load_backend
from medmerge.eval.config import ModelSpec
from medmerge.manifest import git_revision, package_versions, read_manifest, sha256_file
from medmerge.provenance import check_template


def load_adapters(spec: ModelSpec, allow_pickle: bool = False) -> list[Any]:
    from medmerge.lora import load_adapter

    return [load_adapter(a.path, allow_pickle) for a in spec.adapters]


def _recorded_trainings(spec: ModelSpec, adapters: Sequence[Any]) -> list[Any]:
    """Adapter-like records (path, manifest) of what the evaluated weights were trained with."""
    if spec.model is None:
        return list(adapters)
    manifest = read_manifest(spec.model) or {}
    records = (
        [SimpleNamespace(path=Path(spec.model), manifest=manifest)]
        if "template" in manifest
        else []
    )
    for entry in manifest.get("adapters", []) or []:
        if isinstance(entry, dict):
            records.append(SimpleNamespace(path=Path(entry.get("path", "?")), manifest=entry))
    return records


def template_check(
    spec: ModelSpec,
    adapters: Sequence[Any],
    template: str,
    enable_thinking: bool,
    allow_mismatch: bool,
) -> list[str]:
    """Refuse a template or enable_thinking other than the training's unless allowed; then warn."""
    problems = check_template(_recorded_trainings(spec, adapters), template, enable_thinking)
    if problems and not allow_mismatch:
        raise ConfigError(
            f"{problems[0]}; or pass --allow-template-mismatch to evaluate anyway"
            + (f" ({len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    for problem in problems:
        print(
            f"medmerge: warning: {problem} (allowed by --allow-template-mismatch)", file=sys.stderr
        )
    return problems


def open_model(cfg: Any, spec: ModelSpec) -> tuple[Backend, list[str]]:
    """Check templates against the recorded training, then load the backend."""
    adapters = load_adapters(spec, cfg.allow_pickle)
    mismatches = template_check(
        spec, adapters, cfg.template, cfg.enable_thinking, cfg.allow_template_mismatch
    )
    backend = load_backend(spec, cfg, adapters)
    return backend, mismatches


def data_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    hashes = {}
    for path in map(Path, paths):
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        hashes.update({str(f.resolve()): sha256_file(f) for f in files})
    return hashes


def write_json(path: Path, payload: Any) -> None:
    """A result or meta JSON file, written whole or not at all (`atomic_write_json`)."""
    atomic_write_json(path, payload)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")


def run_meta(
    command: str,
    cfg: Any,
    identity: dict[str, Any] | None,
    data: dict[str, str],
    mismatches: Sequence[str] = (),
) -> dict[str, Any]:
    """run_meta.json: written before evaluation starts, so an interrupted run says what it was."""
    return {
        "command": command,
        "argv": sys.argv,
        "model": identity,
        "template": getattr(cfg, "template", None),
        "enable_thinking": getattr(cfg, "enable_thinking", None),
        "template_mismatch": list(mismatches),
        "decoding": cfg.decoding.resolved() if hasattr(cfg, "decoding") else None,
        "seed": getattr(cfg, "seed", None) if not hasattr(cfg, "decoding") else cfg.decoding.seed,
        "data": data,
        "config": cfg.model_dump(),
        "versions": package_versions(),
        "git_revision": git_revision(),
    }
