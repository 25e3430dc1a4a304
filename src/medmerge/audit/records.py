"""Records of any bundled data file as (id, text), and writing a file back without some.

A record is an element of a JSON array, a line of JSON lines, a row of a CSV, a non-empty
line of plain text, a question of a HEAD-QA file ({"exams": {name: {"data": [...]}}}) or an
entry of a PubMedQA-style mapping; its text is every string value in it, joined.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medmerge.artifacts import atomic_write_json
from medmerge.data.records import iter_json_lines, parse_json_document, read_text, split_lines
from medmerge.errors import DataError


def record_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(record_text(v) for v in value.values() if v is not None)
    if isinstance(value, list):
        return "\n".join(record_text(v) for v in value)
    return ""


def _json_containers(data: Any) -> Iterator[tuple[str, Any]]:
    """(id, record) of a parsed JSON document."""
    if isinstance(data, list):
        yield from ((str(i), r) for i, r in enumerate(data))
    elif isinstance(data, dict) and isinstance(data.get("exams"), dict):
        for name, exam in data["exams"].items():
            for i, q in enumerate(exam.get("data", [])):
                yield (f"{name}/{q.get('qid', i) if isinstance(q, dict) else i}", q)
    elif isinstance(data, dict):
        yield from ((str(k), v) for k, v in data.items())
    else:
        raise DataError("JSON document is neither a list nor a mapping of records")


def read_records(path: str | Path) -> list[tuple[str, str]]:
    """(record id, text) for every record of `path`."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: data file not found; check the path")
    suffix = file.suffix.lower()
    if suffix == ".csv":
        with open(file, encoding="utf-8", newline="") as handle:
            return [(str(i + 2), record_text(row)) for i, row in enumerate(csv.DictReader(handle))]
    text = read_text(file)
    if suffix == ".jsonl":
        return [(str(line), record_text(value)) for line, value in iter_json_lines(file, text)]
    if suffix == ".json":
        data = parse_json_document(file, text)
        return [(rid, record_text(r)) for rid, r in _json_containers(data)]
    return [(str(i + 1), line) for i, line in enumerate(split_lines(text)) if line.strip()]


def write_without(path: str | Path, drop: set[str], out: str | Path) -> int:
    """Write `path` to `out` (same format) without the records whose id is in `drop`."""
    file, target = Path(path), Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = file.suffix.lower()
    kept = 0
    if suffix == ".csv":
        with open(file, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [r for i, r in enumerate(reader) if str(i + 2) not in drop]
            with open(target, "w", encoding="utf-8", newline="") as sink:
                writer = csv.DictWriter(sink, fieldnames=reader.fieldnames or [])
                writer.writeheader()
                writer.writerows(rows)
        return len(rows)
    text = read_text(file)
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            data = [r for i, r in enumerate(data) if str(i) not in drop]
            kept = len(data)
        elif isinstance(data.get("exams"), dict):
            for name, exam in data["exams"].items():
                exam["data"] = [
                    q
                    for i, q in enumerate(exam.get("data", []))
                    if f"{name}/{q.get('qid', i)}" not in drop
                ]
                kept += len(exam["data"])
        else:
            data = {k: v for k, v in data.items() if str(k) not in drop}
            kept = len(data)
        atomic_write_json(target, data, indent=1)
        return kept
    lines = [ln for i, ln in enumerate(split_lines(text)) if ln.strip() and str(i + 1) not in drop]
    target.write_text("".join(ln + "\n" for ln in lines), "utf-8")
    return len(lines)
