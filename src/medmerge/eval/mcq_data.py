"""Find the multiple-choice files, tell their format and load them into McqItems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medmerge.data.records import iter_json_records, read_text
from medmerge.errors import ConfigError, DataError, unknown_choice
from medmerge.eval.mcq_formats import LETTERS, LOADERS, McqItem, _csv_rows

MCQ_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; a folder stands for its data files, sorted by name."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in MCQ_SUFFIXES)
            if not found:
                raise DataError(f"{path}: folder holds no {'/'.join(MCQ_SUFFIXES)} files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: data file not found; check the path")
    return files


def detect_format(file: Path) -> str:
    """The format of `file` from its suffix and its first record; DataError when unclear."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return "mmlu_hf"
    if suffix == ".csv":
        return _detect_csv(file)
    if suffix not in (".json", ".jsonl"):
        raise DataError(f"{file}: unsupported file type {suffix!r}; use one of {MCQ_SUFFIXES}")
    found = _detect_whole_json(file) if suffix == ".json" else None
    return found or _detect_record(file)


def _detect_csv(file: Path) -> str:
    _, header = next(_csv_rows(file))
    if header and header[0] == "" and "Question" in header and "Answer" in header:
        return "cmmlu"
    if "Question" in header and "Options" in header:
        return "cmexam"
    if {"question", "answer", "A", "B"} <= set(header):
        return "ceval"
    if len(header) >= 4 and header[-1].strip().upper() in LETTERS:
        return "mmlu"
    raise DataError(f"{file}:1: cannot tell the CSV format from {header[:6]}; pass --format")


def _detect_whole_json(file: Path) -> str | None:
    try:
        data = json.loads(read_text(file))
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("exams"), dict):
        return "headqa"
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, dict) and "QUESTION" in v for v in list(data.values())[:5])
    ):
        return "pubmedqa"
    return None


def _detect_record(file: Path) -> str:
    line, record = next(iter_json_records(file))
    keys = set(record)
    if {"options", "answer_idx"} <= keys:
        return "medqa"
    if {"opa", "cop"} <= keys:
        return "medmcqa"
    if {"choices", "answer"} <= keys:
        return "mmlu_hf"
    raise DataError(
        f"{file}:{line}: cannot tell the format from fields {sorted(keys)}; pass --format "
        "or map fields with format 'columns'"
    )


def load_mcq(paths: list[str], fmt: str = "auto", **options: Any) -> list[McqItem]:
    """Every item of every file; `options` carry columns and medmcqa_cop_base."""
    if fmt != "auto" and fmt not in LOADERS:
        raise ConfigError(unknown_choice("multiple-choice format", fmt, ["auto", *LOADERS]))
    items: list[McqItem] = []
    for file in expand_paths(paths):
        kind = detect_format(file) if fmt == "auto" else fmt
        loaded = list(LOADERS[kind](file, options))
        if not loaded:
            raise DataError(f"{file}: no questions found; check the file")
        items += loaded
    return items
