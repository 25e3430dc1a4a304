"""Readers for the published formats: raw text for PT; Alpaca and ShareGPT for SFT.

PT documents are read as LLaMA-Factory reads them: a `.txt` file holds one document per line
(HF datasets' text loader: lines end at \n, \r\n or \r), JSON/CSV one per record; texts are
kept verbatim (no strip) and an empty one stays (LLaMA-Factory makes it an EOS-only example).
SFT records become
`Conversation`s: an optional system turn, then user/assistant turns, ending with assistant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmerge.data.records import (
    check_record_size,
    iter_csv_column,
    iter_json_records,
    read_text,
)
from medmerge.errors import ConfigError, DataError, did_you_mean, unknown_choice

PT_SUFFIXES = (".txt", ".jsonl", ".json", ".csv")
SFT_FORMATS = ("auto", "alpaca", "sharegpt")
SFT_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
# Names a column mapping may rename: Alpaca fields, the ShareGPT list and its turn keys.
COLUMN_KEYS = ("instruction", "input", "output", "system", "history", "conversations")
LF_COLUMN_KEYS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "messages": "conversations",
}
_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Message:
    """One turn of a chat: role is 'system', 'user' or 'assistant'."""

    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    """A validated chat with `source` = 'file:line' of the record it came from."""

    messages: tuple[Message, ...]
    source: str


def check_roles(messages: tuple[Message, ...], source: str, *, final: str = "assistant") -> None:
    """Require [system] user assistant user ... ending with `final`; else a DataError."""
    turns = messages[1:] if messages and messages[0].role == "system" else messages
    for index, message in enumerate(turns):
        expected = "user" if index % 2 == 0 else "assistant"
        if message.role != expected:
            raise DataError(
                f"{source}: roles out of order: turn {index + 1} is {message.role!r}, expected "
                f"{expected!r}; use an optional system turn, then alternate user and assistant"
            )
    if not turns or turns[-1].role != final:
        article = "an" if final == "assistant" else "a"
        raise DataError(f"{source}: the conversation must end with {article} {final} turn")


def read_pt_texts(path: str | Path, text_column: str | None = None) -> list[str]:
    """Read raw documents for domain pretraining; the format follows the file extension."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in PT_SUFFIXES:
        raise DataError(f"{file}: unsupported PT file type {suffix!r}; use one of {PT_SUFFIXES}")
    column = text_column or "text"
    if suffix == ".txt":
        texts = _txt_documents(file)
    elif suffix == ".csv":
        texts = iter_csv_column(file, column)
    else:
        texts = (
            (line, _text_field(file, line, record, column))
            for line, record in iter_json_records(file)
        )
    documents = []
    for line, text in texts:
        check_record_size(file, line, len(text))
        documents.append(text)
    if not any(text.strip() for text in documents):
        raise DataError(f"{file}: no non-empty documents; check the file or the text column")
    return documents


def _txt_documents(file: Path) -> Iterator[tuple[int, str]]:
    """(line, document): one document per line, as HF datasets' text loader splits a file."""
    lines = read_text(file).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    yield from enumerate(lines, 1)


def _text_field(file: Path, line: int, record: dict[str, Any], column: str) -> str:
    if column not in record:
        hint = did_you_mean(column, record)
        raise DataError(
            f"{file}:{line}: missing field {column!r}{hint}; fields are: {', '.join(record)}; "
            "pass the text field's name"
        )
    value = record[column]
    if not isinstance(value, str):
        raise DataError(
            f"{file}:{line}: field {column!r} must be a string, got {type(value).__name__}"
        )
    return value


def read_sft(
    path: str | Path, fmt: str = "auto", columns: dict[str, str] | None = None
) -> list[Conversation]:
    """Read Alpaca or ShareGPT records (JSON array or lines) into validated conversations."""
    return read_sft_counted(path, fmt, columns)[0]


def read_sft_counted(
    path: str | Path,
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    skip_bad_records: bool = False,
) -> tuple[list[Conversation], int]:
    """`read_sft`, and with `skip_bad_records` bad records dropped and counted, not raised."""
    if fmt not in SFT_FORMATS:
        raise ConfigError(unknown_choice("SFT format", fmt, SFT_FORMATS))
    names = _column_names(columns or {})
    from medmerge.data.lf_datasets import iter_records

    file = Path(path)
    if file.suffix.lower() not in SFT_SUFFIXES:
        raise DataError(
            f"{file}: unsupported SFT file type {file.suffix!r}; use one of {', '.join(SFT_SUFFIXES)}"
        )
    conversations, skipped = [], 0
    for source, record in iter_records(file):
        try:
            kind = fmt if fmt != "auto" else _detect_format(record, names, source)
            convert = _from_alpaca if kind == "alpaca" else _from_sharegpt
            conversations.append(convert(record, names, source))
        except DataError:
            if not skip_bad_records:
                raise
            skipped += 1
    return conversations, skipped


def _column_names(columns: dict[str, str]) -> dict[str, str]:
    """medmerge's column keys, LLaMA-Factory's (prompt, query, response, messages) accepted."""
    columns = {LF_COLUMN_KEYS.get(key, key): value for key, value in columns.items()}
    for key in columns:
        if key not in COLUMN_KEYS:
            choices = (*COLUMN_KEYS, *LF_COLUMN_KEYS)
            raise ConfigError(unknown_choice("SFT column key", key, choices))
    return {key: columns.get(key, key) for key in COLUMN_KEYS}


def _detect_format(record: dict[str, Any], names: dict[str, str], source: str) -> str:
    if names["conversations"] in record or "messages" in record:
        return "sharegpt"
    if names["instruction"] in record or names["output"] in record:
        return "alpaca"
    raise DataError(
        f"{source}: cannot tell the format: fields are {', '.join(record) or 'none'}; expected "
        "'instruction'/'output' (Alpaca) or 'conversations'/'messages' (ShareGPT); "
        "map your field names with columns, e.g. {'instruction': 'question'}"
    )


def _string(record: dict[str, Any], key: str, source: str, *, required: bool) -> str:
    if key not in record or record[key] is None:
        if required:
            hint = did_you_mean(key, record)
            raise DataError(
                f"{source}: missing field {key!r}{hint}; fields are: {', '.join(record)}; "
                "add it or map it with columns"
            )
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"{source}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _from_alpaca(record: dict[str, Any], names: dict[str, str], source: str) -> Conversation:
    """Alpaca: user = instruction + '\\n' + input (when input is set), assistant = output."""
    instruction = _string(record, names["instruction"], source, required=True)
    query = _string(record, names["input"], source, required=False)
    output = _string(record, names["output"], source, required=True)
    system = _string(record, names["system"], source, required=False)
    messages = [Message("system", system)] if system else []
    for user, assistant in _history(record.get(names["history"]), names["history"], source):
        messages += [Message("user", user), Message("assistant", assistant)]
    prompt = "\n".join(part for part in (instruction, query) if part)
    if not prompt.strip():
        raise DataError(f"{source}: empty instruction and input; give the question")
    if not output.strip():
        raise DataError(f"{source}: empty {names['output']!r}; give the answer or drop the record")
    messages += [Message("user", prompt), Message("assistant", output)]
    return Conversation(tuple(messages), source)


def _history(value: Any, key: str, source: str) -> list[tuple[str, str]]:
    if value is None:
        return []
    pairs = value if isinstance(value, list) else None
    if pairs is None or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(s, str) for s in p)
        for p in pairs
    ):
        raise DataError(
            f"{source}: field {key!r} must be a list of [question, answer] string pairs"
        )
    return [(q, a) for q, a in pairs]


def _from_sharegpt(record: dict[str, Any], names: dict[str, str], source: str) -> Conversation:
    """ShareGPT: a list of {from, value} or {role, content} turns under conversations/messages;
    the `system` field is the system prompt unless the first turn is one (as LLaMA-Factory)."""
    key = names["conversations"] if names["conversations"] in record else "messages"
    if key not in record:
        raise DataError(f"{source}: missing field {names['conversations']!r}; add the turn list")
    turns = record[key]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{source}: field {key!r} must be a non-empty list of turns")
    messages = tuple(_sharegpt_turn(turn, number, source) for number, turn in enumerate(turns, 1))
    if messages[0].role != "system":  # else LLaMA-Factory, too, takes the system turn
        system = _string(record, names["system"], source, required=False)
        messages = ((Message("system", system),) if system else ()) + messages
    check_roles(messages, source)
    return Conversation(messages, source)


def _sharegpt_turn(turn: Any, number: int, source: str) -> Message:
    if not isinstance(turn, dict):
        raise DataError(f"{source}: turn {number} must be an object, got {type(turn).__name__}")
    role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
    if role_key not in turn or text_key not in turn:
        raise DataError(
            f"{source}: turn {number} needs 'from'/'value' or 'role'/'content', got keys "
            f"{', '.join(turn) or 'none'}"
        )
    role, text = turn[role_key], turn[text_key]
    if role not in _SHAREGPT_ROLES:
        raise DataError(
            f"{source}: turn {number} has unsupported role {role!r}{did_you_mean(str(role), _SHAREGPT_ROLES)}; "
            f"use one of {', '.join(_SHAREGPT_ROLES)}"
        )
    if not isinstance(text, str):
        raise DataError(
            f"{source}: turn {number} {text_key!r} must be a string, got {type(text).__name__}"
        )
    return Message(_SHAREGPT_ROLES[role], text)
