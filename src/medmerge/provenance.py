"""Provenance checks, beside the manifest they read: the base an adapter recorded, the template it
was trained with, adapter hashes and manifests, and the merged folder's own files.

merge, the in-memory merge (eval, sweep, diagnose) and verify call these; each returns or raises
one line per problem. The small files a model folder carries beside its weights (config,
tokenizer, chat template) are recorded by merge (`side_file_digests`) and checked by verify
against that record and against the base's own files, so an edited tokenizer or chat template
is noticed though no tensor changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from medmerge.errors import MergeError
from medmerge.manifest import MANIFEST_NAME, file_matches, sha256_file


class Adapter(Protocol):
    """What these checks read of an adapter (medmerge.lora.Adapter; lora imports this module)."""

    path: Path
    manifest: dict[str, Any] | None

    def hashes(self) -> dict[str, str]: ...


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# Files medmerge itself writes into a merged folder, or that differ from the base by design.
NOT_SIDE_FILES = {
    MANIFEST_NAME,
    "verify.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
}


def side_files(folder: str | os.PathLike) -> list[Path]:
    """The folder's non-weight files, by name (sub-folders such as merged_adapter/ excluded)."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.name not in NOT_SIDE_FILES and not p.name.endswith(WEIGHT_SUFFIXES)
    )


def side_file_digests(folder: str | os.PathLike) -> dict[str, str]:
    """sha256 of each side file, by name."""
    return {p.name: sha256_file(p) for p in side_files(folder)}


_IDENTITY_KEYS = ("config_sha256", "weights_digest")


def recorded_base_mismatch(adapter: Adapter, identity: dict[str, str]) -> str | None:
    """A one-line description of how the adapter's recorded base differs, or None."""
    recorded = (adapter.manifest or {}).get("base") or {}
    for key in _IDENTITY_KEYS:
        if recorded.get(key) and recorded[key] != identity.get(key):
            what = "config" if key == "config_sha256" else "weights"
            return (
                f"{adapter.path}: adapter was trained on {recorded.get('path', 'another base')} whose {what} "
                f"differ from --base {identity.get('path')}; pass the base it was trained on"
            )
    return None


def has_recorded_base(adapter: Adapter) -> bool:
    recorded = (adapter.manifest or {}).get("base") or {}
    return any(recorded.get(key) for key in _IDENTITY_KEYS)


def check_identity(adapters: Sequence[Adapter], identity: dict[str, str]) -> None:
    for adapter in adapters:
        problem = recorded_base_mismatch(adapter, identity)
        if problem:
            raise MergeError(problem)


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


def check_own_files(
    merged: Path, manifest: dict[str, Any] | None, known: Mapping[Path, str] | None = None
) -> list[str]:
    """The merged folder's weight files must be the ones its manifest recorded (`known`:
    weights digests already made while the files were read, by path)."""
    files = ((manifest or {}).get("outputs") or {}).get("files") or {}
    known = known or {}
    for name, digest in sorted(files.items()):
        path = merged / name
        if path in known and digest.startswith("xxh3_128:"):
            matches = known[path] == digest
        else:
            matches = path.is_file() and file_matches(path, digest)
        if not matches:
            return [
                f"folder overwritten: {merged / name} is not the file its merge manifest recorded "
                "(another run wrote into this folder); re-run the merge into a fresh --out"
            ]
    return []


def check_adapter_manifests(
    adapters: Sequence[Adapter], manifest: dict[str, Any] | None
) -> list[str]:
    """An adapter's own manifest (its template, its base) must be the one the merge read."""
    recorded = {Path(a["path"]).resolve(): a for a in (manifest or {}).get("adapters", [])}
    problems = []
    for adapter in adapters:
        entry = recorded.get(adapter.path.resolve())
        if entry is None or "adapter_manifest_sha256" not in entry:
            continue
        path = adapter.path / MANIFEST_NAME
        now = sha256_file(path) if path.is_file() else None
        if now != entry["adapter_manifest_sha256"]:
            state = "was deleted" if now is None else "was edited"
            problems.append(
                f"adapter manifest changed after the merge: {path} {state} (its recorded template "
                "and base may no longer be what the merge read); re-run the merge"
            )
    return problems


def check_side_files(merged: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Tokenizer, chat template and config files must be the ones the merge wrote."""
    recorded = ((manifest or {}).get("outputs") or {}).get("side_files")
    if recorded is None:
        return []
    now = side_file_digests(merged)
    problems = []
    for name in sorted(recorded.keys() | now.keys()):
        if name not in now:
            problems.append(f"side file deleted after the merge: {merged / name}; re-run the merge")
        elif name not in recorded:
            problems.append(
                f"side file added after the merge: {merged / name} (a tokenizer or chat template "
                "the merge did not write); remove it or re-run the merge"
            )
        elif now[name] != recorded[name]:
            problems.append(
                f"side file edited after the merge: {merged / name} is not what the merge wrote "
                "(tokenizer, chat template or config); re-run the merge"
            )
    return problems


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text("utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            return json.loads(config.read_text("utf-8-sig")).get("chat_template")
        except (ValueError, AttributeError):
            return None
    return None


def _vocabulary(folder: Path) -> Any:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text("utf-8-sig"))
    except ValueError:
        return "<unreadable>"
    return {key: data.get(key) for key in ("model", "added_tokens")}


def check_side_files_against_base(base: Path, merged: Path) -> list[str]:
    """The merged model must read its prompts as the base does: same chat template and vocabulary.

    Compared by content, not bytes, so a merge saved by another tool (re-serialised JSON) passes.
    """
    problems = []
    if _chat_template(base) != _chat_template(merged):
        problems.append(
            f"chat template differs: {merged} does not carry the base's chat template "
            f"({base}); evaluation would prompt it differently — copy the base's tokenizer files"
        )
    if _vocabulary(base) != _vocabulary(merged):
        problems.append(
            f"tokenizer differs: {merged / 'tokenizer.json'} has another vocabulary than the "
            f"base's; copy the base's tokenizer files"
        )
    return problems


def skipped_without_manifest(merged: Path) -> str:
    """The warning when a merged folder has no manifest: which checks could not run."""
    return (
        f"{merged}: no medmerge merge manifest, so these checks were skipped: the weight files' "
        "recorded digests, the tokenizer/chat-template/config files' recorded digests, the "
        "adapters' recorded hashes and manifests (tensors, chat template and vocabulary against "
        "the base were still checked)"
    )
