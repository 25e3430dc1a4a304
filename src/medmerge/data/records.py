"""Low-level record access: UTF-8 text, JSON lines, JSON arrays and CSV rows with line numbers.

Every record comes with the 1-based line where it starts, so each later error can name
`file:line`, also for records inside a pretty-printed JSON array.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medmerge.errors import DataError, did_you_mean

_WHITESPACE = " \t\r\n"
MAX_RECORD_CHARS = 8 * 2**20  # per JSON line or array element


def read_text(path: str | Path) -> str:
    """Read a whole file as UTF-8 (a leading BOM is dropped); bad bytes name their line."""
    file = Path(path)
    if file.is_symlink() and not file.exists():
        raise DataError(
            f"{file}: a symbolic link that leads nowhere (a link loop or a deleted target); "
            "point it at the data file"
        )
    if not file.is_file():
        raise DataError(f"{file}: data file not found; check the path")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{file}:{line}: bytes that are not UTF-8 (at byte {exc.start}); re-save the file as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{file}: file is empty; add records or point to another file")
    return text


class _LineCounter:
    """Turns increasing character offsets into 1-based line numbers in O(total length)."""

    def __init__(self, text: str) -> None:
        self.text, self.offset, self.line = text, 0, 1

    def at(self, offset: int) -> int:
        self.line += self.text.count("\n", self.offset, offset)
        self.offset = offset
        return self.line


def _skip_ws(text: str, index: int) -> int:
    while index < len(text) and text[index] in _WHITESPACE:
        index += 1
    return index


def _invalid_json(file: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> DataError:
    line = exc.lineno + line_offset
    return DataError(f"{file}:{line}: invalid JSON ({exc.msg}, column {exc.colno}); fix the record")


def parse_json_document(file: Path, text: str) -> Any:
    """The value of a file that is one JSON document; a syntax error names its line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None


def split_lines(text: str) -> list[str]:
    """Lines as JSON lines and files written by medmerge mean them: split on '\n' only.

    str.splitlines also splits on U+2028, U+2029, U+0085 and other separators, which JSON
    allows unescaped inside strings (medmerge writes them so, with ensure_ascii=False).
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def check_record_size(file: Path, line: int, chars: int) -> None:
    """Refuse one record longer than MAX_RECORD_CHARS: tokenizing it would take minutes and
    gigabytes (a 50 MB line took 8 GB), and it is almost always a file that lost its line breaks."""
    if chars > MAX_RECORD_CHARS:
        raise DataError(
            f"{file}:{line}: one record of {chars:,} characters, over the limit of "
            f"{MAX_RECORD_CHARS:,}; split it into several records"
        )


def iter_json_lines(file: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, value) for each non-blank line of a JSON lines file."""
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        check_record_size(file, number, len(line))
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _invalid_json(file, exc, number - 1) from None


def iter_json_array(file: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, value) for each element of a top-level JSON array, at the line it starts."""
    decoder, lines = json.JSONDecoder(), _LineCounter(text)
    index = _skip_ws(text, 0)
    if text[index] != "[":
        raise DataError(f"{file}:{lines.at(index)}: expected a JSON array '[...]' of records")
    index = _skip_ws(text, index + 1)
    if index < len(text) and text[index] == "]":
        raise DataError(f"{file}: the JSON array is empty; add records")
    while True:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise _invalid_json(file, exc) from None
        check_record_size(file, lines.at(index), end - index)
        yield lines.at(index), value
        index = _skip_ws(text, end)
        if index < len(text) and text[index] == ",":
            index = _skip_ws(text, index + 1)
            continue
        if index < len(text) and text[index] == "]":
            break
        where = lines.at(min(index, len(text)))
        raise DataError(f"{file}:{where}: invalid JSON (expected ',' or ']'); fix the array")
    rest = _skip_ws(text, index + 1)
    if rest < len(text):
        raise DataError(f"{file}:{lines.at(rest)}: invalid JSON (extra data after the array)")


def iter_json_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) from JSON lines, or from a `.json` array; non-objects are errors."""
    file = Path(path)
    text = read_text(file)
    is_array = file.suffix.lower() != ".jsonl" and text[_skip_ws(text, 0)] == "["
    records = iter_json_array(file, text) if is_array else iter_json_lines(file, text)
    for line, value in records:
        if not isinstance(value, dict):
            raise DataError(
                f"{file}:{line}: expected a JSON object per record, got {type(value).__name__}"
            )
        yield line, value


def iter_csv_column(path: str | Path, column: str) -> Iterator[tuple[int, str]]:
    """Yield (line, cell) of one named CSV column; a missing column lists those present."""
    file = Path(path)
    reader = csv.reader(io.StringIO(read_text(file), newline=""))
    header = next(reader)
    if column not in header:
        hint = did_you_mean(column, header)
        raise DataError(
            f"{file}:1: no column {column!r}{hint}; columns are: {', '.join(header)}; "
            "pass the text column's name"
        )
    position = header.index(column)
    start = reader.line_num + 1
    for row in reader:
        if row:
            if position >= len(row):
                raise DataError(f"{file}:{start}: row has {len(row)} cells, no {column!r} cell")
            yield start, row[position]
        start = reader.line_num + 1
