"""`medmerge audit leakage`: did evaluation items leak into the training data?

Text is normalised (Unicode NFKC, lower case, punctuation dropped, whitespace collapsed)
and cut into tokens: words for alphabetic scripts, single characters for CJK. An evaluation
item is an exact duplicate when its normalised text's sha256 equals a training record's;
its n-gram overlap is the share of its n-grams (13 by default) found in any training
record. An item shorter than n tokens counts as one n-gram of its whole text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.audit.records import read_records, write_without
from medmerge.config import StageConfig
from medmerge.errors import DataError
from medmerge.manifest import sha256_file, write_manifest

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


class AuditConfig(StageConfig):
    """`medmerge audit leakage`: exact duplicates and n-gram overlap, train vs eval."""

    path_fields = ("train", "eval", "out", "exclude")

    train: list[str] = Field(min_length=1, description="training data files")
    eval: list[str] = Field(min_length=1, description="evaluation data files")
    ngram: int = Field(default=13, ge=1, description="n-gram length")
    threshold: float = Field(
        default=0.0, ge=0, le=1, description="flag items whose overlap exceeds this"
    )
    out: str = Field(description="audit folder (leakage.json, items.jsonl)")
    exclude: str | None = Field(
        default=None, description="write decontaminated copies of the eval files here"
    )
    force: bool = Field(default=False, description="replace an existing --out")


def tokens(text: str) -> list[str]:
    normal = unicodedata.normalize("NFKC", text).lower()
    return _TOKEN.findall(normal)


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(tokens(text)).encode("utf-8")).hexdigest()


def ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def training_index(files: Iterable[str], n: int) -> tuple[set[str], set[tuple[str, ...]]]:
    hashes, grams = set(), set()
    for file in files:
        for _, text in read_records(file):
            words = tokens(text)
            hashes.add(hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest())
            grams |= ngrams(words, n)
            if len(words) >= n:  # short eval items match a whole short training record only
                continue
    return hashes, grams


def audit_items(
    file: str, hashes: set[str], grams: set[tuple[str, ...]], n: int, threshold: float
) -> list[dict[str, Any]]:
    rows = []
    for record_id, text in read_records(file):
        words = tokens(text)
        own = ngrams(words, n)
        shared = len(own & grams)
        overlap = shared / len(own) if own else 0.0
        exact = hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest() in hashes
        rows.append(
            {
                "file": file,
                "id": record_id,
                "tokens": len(words),
                "ngrams": len(own),
                "shared_ngrams": shared,
                "overlap": overlap,
                "exact_duplicate": exact,
                "flagged": exact or overlap > threshold,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)

    def count(key: str) -> int:
        return sum(bool(r[key]) for r in rows)

    return {
        "items": n,
        "exact_duplicates": count("exact_duplicate"),
        "exact_duplicate_pct": 100 * count("exact_duplicate") / n if n else 0.0,
        "with_overlap": sum(r["shared_ngrams"] > 0 for r in rows),
        "with_overlap_pct": 100 * sum(r["shared_ngrams"] > 0 for r in rows) / n if n else 0.0,
        "flagged": count("flagged"),
        "flagged_pct": 100 * count("flagged") / n if n else 0.0,
        "mean_overlap": sum(r["overlap"] for r in rows) / n if n else 0.0,
    }


def run_audit(cfg: AuditConfig) -> int:
    hashes, grams = training_index(cfg.train, cfg.ngram)
    per_file = {f: audit_items(f, hashes, grams, cfg.ngram, cfg.threshold) for f in cfg.eval}
    report = {
        "ngram": cfg.ngram,
        "threshold": cfg.threshold,
        "train": {f: sha256_file(f) for f in cfg.train},
        "eval": {f: {"sha256": sha256_file(f), **summarize(rows)} for f, rows in per_file.items()},
        "total": summarize([r for rows in per_file.values() for r in rows]),
    }
    inputs = [*cfg.train, *cfg.eval]
    _check_exclude_names(cfg)
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(
            staged_output(cfg.out, cfg.force, inputs=inputs, stage="audit-leakage")
        )
        if cfg.exclude:
            exclude = stack.enter_context(
                staged_output(
                    cfg.exclude, cfg.force, inputs=[*inputs, cfg.out], stage="audit-exclude"
                )
            )
            report["decontaminated"] = _exclude(cfg, per_file, exclude)
            write_manifest(exclude, "audit-exclude", {"config": cfg.model_dump()})
        with open(folder / "items.jsonl", "w", encoding="utf-8") as handle:
            for rows in per_file.values():
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        atomic_write_json(folder / "leakage.json", report)
        write_manifest(folder, "audit-leakage", {"config": cfg.model_dump()})
    for file, summary in report["eval"].items():
        print(
            f"[audit] {Path(file).name}: {summary['items']} items, "
            f"{summary['exact_duplicates']} exact duplicates ({summary['exact_duplicate_pct']:.1f}%), "
            f"{summary['with_overlap']} with {cfg.ngram}-gram overlap "
            f"({summary['with_overlap_pct']:.1f}%)"
        )
    return 0


def _check_exclude_names(cfg: AuditConfig) -> None:
    """Each evaluation file gets its copy under its own name: two files named alike would clash."""
    if not cfg.exclude:
        return
    seen: dict[str, str] = {}
    for file in cfg.eval:
        name = Path(file).name
        if name in seen:
            raise DataError(
                f"{file}: --exclude would write its copy as {name}, the name {seen[name]}'s copy "
                "has; audit the two files in separate runs"
            )
        seen[name] = file


def _exclude(cfg: AuditConfig, per_file: dict[str, list[dict]], folder: Path) -> dict[str, Any]:
    """Decontaminated copies in the staged `folder`; reported under their final paths."""
    written = {}
    for file, rows in per_file.items():
        drop = {r["id"] for r in rows if r["flagged"]}
        kept = write_without(file, drop, folder / Path(file).name)
        target = Path(cfg.exclude) / Path(file).name
        written[str(target)] = {"kept": kept, "dropped": len(drop)}
        print(f"[audit] decontaminated copy: {target} ({kept} kept, {len(drop)} dropped)")
    return written
