"""LLaMA-Factory 0.9.5's record converters (data/converter.py), for SFT records.

alpaca: history pairs, then the user turn "prompt\\nquery" (each part only when non-empty),
the reply from `response`, the system prompt from the `system` column. sharegpt: the turn list
under `messages`, roles read with `role_tag`/`content_tag` and the custom tags; a first turn
with `system_tag` is the system prompt, else the `system` column. openai: the same with tool
calls, and LLaMA-Factory's "detailed thinking off" system line (added when the system prompt
says nothing about detailed thinking; kept for parity). A missing column reads as empty, as HF
datasets loads it.

Records LLaMA-Factory drops (a bad tag order, an odd number of turns, no reply) raise a
DataError naming the record here; tool turns are refused the same way.
"""

from __future__ import annotations

from typing import Any

from medmerge.data.lf_datasets import DatasetSpec
from medmerge.data.readers import Conversation, Message
from medmerge.errors import DataError

_THINKING_OFF = "detailed thinking off"


def convert_record(spec: DatasetSpec, record: dict[str, Any], source: str) -> Conversation:
    if _column(spec, record, "tools", source):
        raise DataError(
            f"{source}: the record describes tools; function calling is not supported: drop "
            "the record or pass --skip-bad-records"
        )
    if spec.formatting == "alpaca":
        system, turns = _alpaca(spec, record, source)
    else:
        system, turns = _turns(spec, record, source)
    if spec.formatting == "openai":
        system = _openai_system(system)
    messages = ([Message("system", system)] if system else []) + turns
    return Conversation(tuple(messages), source)


def _column(spec: DatasetSpec, record: dict[str, Any], key: str, source: str) -> Any:
    """The record's value of a mapped column; a missing one is None, as HF datasets loads it."""
    name = spec.columns.get(key)
    return record.get(name) if name else None


def _text(value: Any, what: str, source: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{source}: {what} must be a string, got {type(value).__name__}")
    return value


def _alpaca(spec: DatasetSpec, record: dict[str, Any], source: str):
    turns: list[Message] = []
    history = _column(spec, record, "history", source)
    if isinstance(history, list):
        for pair in history:
            if not (isinstance(pair, list | tuple) and len(pair) == 2):
                raise DataError(f"{source}: history must be [question, answer] pairs")
            turns += [
                Message("user", _text(pair[0], "a history question", source)),
                Message("assistant", _text(pair[1], "a history answer", source)),
            ]
    parts = [_text(_column(spec, record, k, source), k, source) for k in ("prompt", "query")]
    turns.append(Message("user", "\n".join(part for part in parts if part)))
    response = _column(spec, record, "response", source)
    if not isinstance(response, str):
        raise DataError(
            f"{source}: no reply: column {spec.columns['response']!r} must be a string "
            "(LLaMA-Factory drops such records); fix it or pass --skip-bad-records"
        )
    turns.append(Message("assistant", response))
    system = _text(_column(spec, record, "system", source), "system", source)
    return system, turns


def _turn_list(spec: DatasetSpec, record: dict[str, Any], source: str) -> list[dict]:
    turns = _column(spec, record, "messages", source)
    if turns is None:
        raise DataError(f"{source}: no column {spec.columns['messages']!r} with the turns")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DataError(
            f"{source}: column {spec.columns['messages']!r} must be a list of turn objects"
        )
    tags = spec.tags
    for number, turn in enumerate(turns, 1):
        if tags["role_tag"] not in turn or tags["content_tag"] not in turn:
            raise DataError(
                f"{source}: turn {number} has no {tags['role_tag']!r}/{tags['content_tag']!r}; "
                f"its keys are {', '.join(turn) or 'none'}; set 'tags' in dataset_info.json"
            )
    return turns


def _turns(spec: DatasetSpec, record: dict[str, Any], source: str):
    tags = spec.tags
    turns = _turn_list(spec, record, source)
    role, content = tags["role_tag"], tags["content_tag"]
    if tags["system_tag"] and turns and turns[0][role] == tags["system_tag"]:
        system, turns = _text(turns[0][content], "the system turn", source), turns[1:]
    else:
        system = _text(_column(spec, record, "system", source), "system", source)
    tool_tags = {tags["observation_tag"], tags["function_tag"]} - {None}
    if spec.formatting == "openai":
        tool_tags |= {"tool"}
    messages = []
    for number, turn in enumerate(turns, 1):
        if turn[role] in tool_tags or turn.get("tool_calls"):
            raise DataError(
                f"{source}: turn {number} is a tool turn ({turn[role]!r}); function calls and "
                "observations are not supported: drop the record or pass --skip-bad-records"
            )
        expected = tags["user_tag"] if number % 2 else tags["assistant_tag"]
        if turn[role] != expected:
            raise DataError(
                f"{source}: turn {number} has role {turn[role]!r}, expected {expected!r} "
                "(LLaMA-Factory drops such records); fix it, set 'tags' or pass --skip-bad-records"
            )
        kind = "user" if number % 2 else "assistant"
        messages.append(Message(kind, _text(turn[content], f"turn {number}", source)))
    if not messages or len(messages) % 2:
        raise DataError(
            f"{source}: {len(messages)} turns after the system turn; need user/assistant pairs "
            "ending with the reply (LLaMA-Factory drops such records)"
        )
    return system, messages


def _openai_system(system: str) -> str:
    """LLaMA-Factory 0.9.5's OpenAI converter's system prompt for a record without tools."""
    if not system:
        return _THINKING_OFF
    if "detailed thinking on" in system or _THINKING_OFF in system:
        return system
    return system + "\n" + _THINKING_OFF
