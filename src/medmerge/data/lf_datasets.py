"""Datasets as LLaMA-Factory users keep them: a folder with dataset_info.json naming each set.

`--dataset a,b --dataset-dir DIR` reads DIR/dataset_info.json as LLaMA-Factory 0.9.5 does
(data/parser.py): per name `file_name` (a file or a folder of files of one type: json, jsonl,
csv, parquet, txt), `formatting` (alpaca, sharegpt, openai), `columns` (prompt, query, response,
history, messages, system, tools) and `tags` (role_tag, content_tag, user_tag, assistant_tag,
observation_tag, function_tag, system_tag), with LLaMA-Factory's defaults for what is left out.
Records become conversations as its converters (data/converter.py) make them. What medmerge
cannot honour (hub/script/cloud sources, ranking, images/videos/audios, kto, num_samples, which
LLaMA-Factory samples at random) is refused, every problem at once, one line each.

A record LLaMA-Factory would drop with a warning (bad role tags, odd turn count, no reply) is an
error naming file:line, unless `skip_bad_records`: then it is dropped and counted. Tool turns
(function_call / observation, OpenAI tool calls) are refused in one line naming the record.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmerge.data.readers import Conversation
from medmerge.data.records import iter_json_records, read_text
from medmerge.errors import ConfigError, DataError, did_you_mean

DATA_CONFIG = "dataset_info.json"
FILE_TYPES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
FILE_TYPES[".txt"] = "text"
COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "history": None,
    "messages": "conversations",
    "system": None,
    "tools": None,
}
TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
FORMATTINGS = ("alpaca", "sharegpt", "openai")
_KEYS = ("file_name", "formatting", "columns", "tags", "split", "file_sha1", "ranking")
_REFUSED_KEYS = {
    "hf_hub_url": "loads from the Hugging Face hub",
    "ms_hub_url": "loads from ModelScope",
    "om_hub_url": "loads from Modelers",
    "script_url": "runs a loading script",
    "cloud_file_name": "loads from cloud storage",
    "subset": "names a hub subset",
    "folder": "names a hub folder",
    "num_samples": "samples at random in LLaMA-Factory; use max_samples (the first N)",
}
_REFUSED_COLUMNS = ("images", "videos", "audios", "chosen", "rejected", "kto_tag")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset_info.json entry, with LLaMA-Factory's defaults filled in."""

    name: str
    files: tuple[Path, ...]
    formatting: str = "alpaca"
    columns: dict[str, str | None] = field(default_factory=lambda: dict(COLUMNS))
    tags: dict[str, str | None] = field(default_factory=lambda: dict(TAGS))


def load_dataset_info(dataset_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    import json

    info = Path(dataset_dir) / DATA_CONFIG
    if not info.is_file():
        raise ConfigError(
            f"{info}: no {DATA_CONFIG} in --dataset-dir; point it at the folder that holds it"
        )
    try:
        entries = json.loads(read_text(info))
    except json.JSONDecodeError as exc:
        raise DataError(f"{info}:{exc.lineno}: invalid JSON ({exc.msg}); fix the file") from None
    if not isinstance(entries, dict):
        raise DataError(f"{info}: expected an object of dataset entries")
    return info, entries


def dataset_specs(names: list[str], dataset_dir: str | Path) -> list[DatasetSpec]:
    """The entries `names` of dataset_info.json; every problem reported at once."""
    info, entries = load_dataset_info(dataset_dir)
    specs, problems = [], []
    for name in names:
        if name not in entries:
            problems.append(
                f"{info}: no dataset {name!r}{did_you_mean(name, entries)}; "
                f"defined: {', '.join(entries) or 'none'}"
            )
            continue
        spec, entry_problems = _spec(info, name, entries[name])
        problems += entry_problems
        if spec is not None:
            specs.append(spec)
    if problems:
        raise ConfigError("; ".join(problems))
    return specs


def _entry_problems(info: Path, name: str, entry: dict[str, Any]) -> list[str]:
    where = f"{info}: dataset {name!r}"
    problems = [
        f"{where}: {key!r} {why}; not supported"
        for key, why in _REFUSED_KEYS.items()
        if key in entry
    ]
    known = (*_KEYS, *_REFUSED_KEYS)
    problems += [
        f"{where}: unknown key {key!r}{did_you_mean(key, known)}"
        for key in entry
        if key not in known
    ]
    if entry.get("ranking"):
        problems.append(f"{where}: ranking (preference) data is not supported for SFT/PT")
    if entry.get("formatting", "alpaca") not in FORMATTINGS:
        problems.append(f"{where}: formatting must be one of {', '.join(FORMATTINGS)}")
    for key, known_keys in (("columns", (*COLUMNS, *_REFUSED_COLUMNS)), ("tags", tuple(TAGS))):
        value = entry.get(key, {})
        if not isinstance(value, dict):
            problems.append(f"{where}: {key!r} must be an object")
            continue
        for item in value:
            if item in _REFUSED_COLUMNS:
                problems.append(
                    f"{where}: column {item!r} (multimodal/preference) is not supported"
                )
            elif item not in known_keys:
                hint = did_you_mean(item, known_keys)
                problems.append(f"{where}: unknown {key[:-1]} {item!r}{hint}")
    if "file_name" not in entry and not any(key in entry for key in _REFUSED_KEYS):
        problems.append(f"{where}: no 'file_name'; name the data file or folder")
    return problems


def _spec(info: Path, name: str, entry: Any) -> tuple[DatasetSpec | None, list[str]]:
    if not isinstance(entry, dict):
        return None, [f"{info}: dataset {name!r} must be an object"]
    problems = _entry_problems(info, name, entry)
    if problems:
        return None, problems
    target = info.parent / entry["file_name"]
    files = sorted(p for p in target.iterdir() if p.is_file()) if target.is_dir() else [target]
    if not target.exists():
        return None, [f"{info}: dataset {name!r}: {target} does not exist; fix file_name"]
    types = {FILE_TYPES.get(p.suffix.lower()) for p in files}
    if None in types or len(types) != 1:
        return None, [
            f"{info}: dataset {name!r}: {target} must hold files of one type among "
            f"{', '.join(FILE_TYPES)}"
        ]
    columns = {**COLUMNS, **entry.get("columns", {})}
    tags = {**TAGS, **entry.get("tags", {})}
    formatting = entry.get("formatting", "alpaca")
    return DatasetSpec(name, tuple(files), formatting, columns, tags), []


def iter_records(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line or file:row, record) of a json/jsonl/csv/parquet/txt file."""
    kind = FILE_TYPES.get(file.suffix.lower())
    if kind == "json":
        yield from ((f"{file}:{line}", record) for line, record in iter_json_records(file))
    elif kind == "csv":
        reader = csv.DictReader(io.StringIO(read_text(file), newline=""))
        start = 2
        for row in reader:
            yield f"{file}:{start}", dict(row)
            start = reader.line_num + 1
    elif kind == "parquet":
        import pyarrow.parquet as parquet

        for number, row in enumerate(parquet.read_table(file).to_pylist(), start=1):
            yield f"{file}:row {number}", row
    elif kind == "text":
        from medmerge.data.readers import _txt_documents

        yield from ((f"{file}:{line}", {"text": text}) for line, text in _txt_documents(file))
    else:
        raise DataError(f"{file}: unsupported file type; use one of {', '.join(FILE_TYPES)}")


def spec_records(spec: DatasetSpec, max_samples: int | None) -> list[tuple[str, dict[str, Any]]]:
    """The dataset's records in order, the first `max_samples` (LLaMA-Factory counts per set)."""
    records = []
    for file in spec.files:
        for source, record in iter_records(file):
            if max_samples is not None and len(records) >= max_samples:
                return records
            records.append((source, record))
    return records


def spec_texts(spec: DatasetSpec, max_samples: int | None) -> list[str]:
    """PT documents: the prompt column (LLaMA-Factory's alpaca converter), verbatim."""
    column = spec.columns["prompt"] or "instruction"
    texts = []
    for source, record in spec_records(spec, max_samples):
        if column not in record:
            hint = did_you_mean(column, record)
            raise DataError(
                f"{source}: no column {column!r}{hint}; set columns.prompt in {DATA_CONFIG}"
            )
        value = record[column]
        texts.append("" if value is None else str(value))
    return texts


def spec_conversations(
    spec: DatasetSpec, max_samples: int | None, skip_bad_records: bool
) -> tuple[list[Conversation], int]:
    """SFT conversations of the dataset and how many bad records were skipped."""
    from medmerge.data.lf_converters import convert_record

    conversations, skipped = [], 0
    for source, record in spec_records(spec, max_samples):
        try:
            conversations.append(convert_record(spec, record, source))
        except DataError:
            if not skip_bad_records:
                raise
            skipped += 1
    return conversations, skipped
