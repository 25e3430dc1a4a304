"""Find the multiple-choice files, tell their format and load them into McqItems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medmerge.errors import ConfigError, DataError, unknown_choice
from medmerge.eval.mcq_formats import LOADERS, FileProbe, McqItem


def mcq_suffixes() -> tuple[str, ...]:
    """The file types some loader detects, e.g. (".csv", ".json", ".jsonl", ".parquet")."""
    return tuple(sorted({s for entry in LOADERS.values() for s in entry.suffixes}))


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; a folder stands for its data files, sorted by name."""
    files: list[Path] = []
    suffixes = mcq_suffixes()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
            if not found:
                raise DataError(f"{path}: folder holds no {'/'.join(suffixes)} files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: data file not found; check the path")
    return files


def _is_pubmedqa_labels(probe: FileProbe) -> bool:
    """test_ground_truth.json: a JSON object of PMID -> final decision."""
    if probe.suffix != ".json":
        return False
    data = probe.document
    return (
        isinstance(data, dict)
        and bool(data)
        and all(v in ("yes", "no", "maybe") for v in data.values())
    )


def detect_format(file: Path) -> str:
    """The format of `file`: the first loader, by priority, whose rule accepts it."""
    probe = FileProbe(file)
    candidates = sorted(
        (entry.priority, index, name)
        for index, (name, entry) in enumerate(LOADERS.items())
        if entry.detect is not None and probe.suffix in entry.suffixes
    )
    if not candidates:
        raise DataError(
            f"{file}: unsupported file type {probe.suffix!r}; use one of {mcq_suffixes()}"
        )
    for _, _, name in candidates:
        if LOADERS[name].detect(probe):
            return name
    if _is_pubmedqa_labels(probe):
        raise DataError(
            f"{file}: PubMedQA labels only (PMID -> yes/no/maybe), no questions; give "
            "ori_pqal.json as --data and this file as --ids-file (or use --split test)"
        )
    if probe.suffix == ".csv":
        raise DataError(
            f"{file}:1: cannot tell the CSV format from {probe.csv_header[:6]}; pass --format"
        )
    line, _ = probe.first_record
    raise DataError(
        f"{file}:{line}: cannot tell the format from fields {sorted(probe.record_keys)}; "
        "pass --format or map fields with format 'columns'"
    )


def load_mcq(paths: list[str], fmt: str = "auto", **options: Any) -> list[McqItem]:
    """Every item of every file; `options` carry columns and medmcqa_cop_base."""
    if fmt != "auto" and fmt not in LOADERS:
        raise ConfigError(unknown_choice("multiple-choice format", fmt, ["auto", *LOADERS]))
    items: list[McqItem] = []
    for file in expand_paths(paths):
        kind = detect_format(file) if fmt == "auto" else fmt
        loaded = list(LOADERS[kind].load(file, options))
        if not loaded:
            raise DataError(f"{file}: no questions found; check the file")
        items += loaded
    return items
