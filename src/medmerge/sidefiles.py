"""The small files a model folder carries beside its weights: config, tokenizer, chat template.

merge copies them from the base and records their digests in its manifest; verify checks the
merged folder's copies against that record and against the base's own files, so an edited
tokenizer or chat template is noticed even though no tensor changed.
"""

from __future__ import annotations

import os
from pathlib import Path

from medmerge.manifest import MANIFEST_NAME, sha256_file

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# Files medmerge itself writes into a merged folder, or that differ from the base by design.
NOT_SIDE_FILES = {
    MANIFEST_NAME,
    "verify.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
}
# config.json records the merged dtype, so it legitimately differs from the base's.
DIFFERS_FROM_BASE = {"config.json"}


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
