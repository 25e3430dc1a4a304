"""Provenance written beside every artifact and read back by the next stage.

Each artifact folder holds `medmerge_manifest.json`: what made it (stage, config, versions,
git revision), from what (content hashes of inputs) and when.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

from medmerge.artifacts import atomic_write_json
from medmerge.errors import ModelError

MANIFEST_NAME = "medmerge_manifest.json"
_TRACKED_PACKAGES = ("medmerge", "torch", "transformers", "peft", "safetensors", "accelerate")


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def weights_hasher() -> xxhash.xxh3_128:
    """A streaming hasher for model weight files; finish it with `weights_digest_of`."""
    return xxhash.xxh3_128()


def weights_digest_of(hasher: xxhash.xxh3_128) -> str:
    return f"xxh3_128:{hasher.hexdigest()}"


def weights_file_digest(path: str | os.PathLike, chunk_bytes: int = 1 << 24) -> str:
    """'xxh3_128:<hex>' of a weight file's bytes.

    Model weights are tens of GB; sha256 (~1.5 GB/s on one core) would cost as much CPU as
    the merge itself, xxh3 (~10 GB/s) a tenth of it. It is a fingerprint against mistakes
    (a swapped or overwritten file), not a defence against a forger; small files (data,
    adapters' configs, results) keep sha256.
    """
    hasher = weights_hasher()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(view):
            hasher.update(view[:got])
    return weights_digest_of(hasher)


def file_matches(path: str | os.PathLike, recorded: str) -> bool:
    """True when a file still has the digest a manifest recorded (xxh3_128:… or sha256 hex)."""
    if recorded.startswith("xxh3_128:"):
        return weights_file_digest(path) == recorded
    return sha256_file(path) == recorded


def sha256_json(obj: Any) -> str:
    """Hex sha256 of an object's canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def weight_files(model_dir: str | os.PathLike) -> list[Path]:
    """The weight files of a model or adapter folder, safetensors preferred, sorted by name."""
    folder = Path(model_dir)
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted([*folder.glob("*.bin"), *folder.glob("*.pt")])


def files_digest(paths: list[Path], known: Mapping[Path, str] | None = None) -> str:
    """One digest over several weight files: the sha256 of their names and content digests
    (those in `known` taken from it, as a stream that read the files whole hashed them)."""
    known = known or {}
    return sha256_json({p.name: known.get(p) or weights_file_digest(p) for p in paths})


def model_identity(
    model_dir: str | os.PathLike, known: Mapping[Path, str] | None = None
) -> dict[str, str]:
    """Identity of a HF model folder: where it is, and hashes of its config and weights
    (`known`: weight files' digests already made, by file path)."""
    folder = Path(model_dir)
    config = folder / "config.json"
    if not config.is_file():
        raise ModelError(
            f"{folder}: not a model folder (no config.json); pass a Hugging Face model directory"
        )
    weights = weight_files(folder)
    if not weights:
        raise ModelError(f"{folder}: no weight files (*.safetensors) found next to config.json")
    config_dict = read_model_config(folder)
    # The config hash ignores fields that tools rewrite on save without changing the model.
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        config_dict.pop(volatile, None)
    return {
        "path": str(folder.resolve()),
        "config_sha256": sha256_json(config_dict),
        "weights_digest": files_digest(weights, known),
    }


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The medmerge source checkout's commit, or None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_manifest(folder: str | os.PathLike, stage: str, payload: dict[str, Any]) -> Path:
    """Write the manifest of an artifact folder; `payload` holds the stage's inputs and config."""
    record = {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "versions": package_versions(),
        "git_revision": git_revision(),
        **payload,
    }
    # atomic even inside a staging folder: a crash never leaves half a manifest to be trusted
    return atomic_write_json(Path(folder) / MANIFEST_NAME, record)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of an artifact folder, or None when it has none."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    return read_json_object(path, "restore the manifest or re-create the artifact")


def read_model_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A model folder's config.json as a dict; any problem with it is one ModelError line."""
    return read_json_object(
        Path(folder) / "config.json", "restore the model's config.json or re-download the model"
    )


def read_json_object(path: str | os.PathLike, fix: str) -> dict[str, Any]:
    """A JSON file that must hold one object; any problem is one ModelError line ending in `fix`.

    A leading UTF-8 BOM (Windows editors write one) is refused, not skipped: transformers and
    PEFT read these files too, and their json.load fails on it.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ModelError(f"{file}: cannot read ({exc.strerror or exc}); {fix}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raise ModelError(
            f"{file}: starts with a UTF-8 byte-order mark, which transformers and PEFT cannot "
            "read; re-save it without the BOM"
        )
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ModelError(
            f"{file}:{line}: bytes that are not UTF-8 (at byte {exc.start}); {fix}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{file}:{exc.lineno}: invalid JSON ({exc.msg}); {fix}") from None
    except RecursionError:
        raise ModelError(f"{file}: JSON nested too deeply to read; {fix}") from None
    if not isinstance(value, dict):
        raise ModelError(
            f"{file}: expected a JSON object {{...}}, found a {type(value).__name__}; {fix}"
        )
    return value
