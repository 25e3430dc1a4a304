"""Provenance checks: recorded bases, adapter hashes, the merged folder's own files, templates."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medmerge.manifest import file_matches
from medmerge.merge.adapters import Adapter
from medmerge.merge.preflight import recorded_base_mismatch


def check_template(
    adapters: Sequence[Adapter], template: str | None, enable_thinking: bool | None = None
) -> list[str]:
    """One line per adapter whose training template or enable_thinking differs from the given ones.

    Evaluation calls this before scoring: a model asked in another template than it learned
    scores low for reasons that have nothing to do with the merge.
    """
    problems = []
    for adapter in adapters:
        recorded = adapter.manifest or {}
        trained = recorded.get("template")
        if template is not None and trained is not None and trained != template:
            problems.append(
                f"template mismatch: {adapter.path} was trained with template {trained!r}, "
                f"evaluation uses {template!r}; pass --template {trained}"
            )
        thinking = recorded.get("enable_thinking")
        if enable_thinking is not None and thinking is not None and thinking != enable_thinking:
            problems.append(
                f"enable_thinking mismatch: {adapter.path} was trained with enable_thinking={thinking}, "
                f"evaluation uses {enable_thinking}"
            )
    return problems


def check_recorded_bases(adapters: Sequence[Adapter], identity: dict[str, str]) -> list[str]:
    return [p for a in adapters if (p := recorded_base_mismatch(a, identity))]


def check_adapter_hashes(adapters: Sequence[Adapter], manifest: dict[str, Any] | None) -> list[str]:
    """Adapters on disk must be the ones the merge recorded (not retrained or swapped since)."""
    recorded = {Path(a["path"]).resolve(): a for a in (manifest or {}).get("adapters", [])}
    problems = []
    for adapter in adapters:
        entry = recorded.get(adapter.path.resolve())
        if entry is None:
            continue
        now = adapter.hashes()
        for key in ("adapter_weights_sha256", "adapter_config_sha256"):
            if entry.get(key) and entry[key] != now[key]:
                problems.append(
                    f"adapter changed after the merge: {adapter.path} no longer matches the hash in the "
                    "merge manifest (retrained or swapped); re-run the merge"
                )
                break
    return problems


def check_own_files(merged: Path, manifest: dict[str, Any] | None) -> list[str]:
    """The merged folder's weight files must be the ones its manifest recorded."""
    files = ((manifest or {}).get("outputs") or {}).get("files") or {}
    for name, digest in sorted(files.items()):
        path = merged / name
        if not path.is_file() or not file_matches(path, digest):
            return [
                f"folder overwritten: {merged / name} is not the file its merge manifest recorded "
                "(another run wrote into this folder); re-run the merge into a fresh --out"
            ]
    return []
