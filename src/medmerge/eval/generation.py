"""Generation tasks: prompts with references, answered by a backend and scored.

Data: Alpaca or ShareGPT (the last assistant turn is the reference, the turns before it the
prompt), PubMedQA ori_pqal.json (contexts + question -> LONG_ANSWER), or any JSON lines/array
with a prompt field and a reference field (`columns`: prompt, reference, id, system; by
default the first present of question/prompt/query/input and reference/summary/answer/
output/response), e.g. MeQSum's question -> summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmerge.data.readers import Message, read_sft
from medmerge.data.records import iter_json_records, read_text
from medmerge.errors import DataError
from medmerge.eval.backends import Backend
from medmerge.eval.leakage import DEFAULT_MARKERS, leakage_summary
from medmerge.eval.metrics import raw_and_stripped, record_languages
from medmerge.eval.uncertainty import SETTINGS, gen_uncertainty

PROMPT_FIELDS = ("question", "prompt", "query", "input")
REFERENCE_FIELDS = ("reference", "summary", "answer", "output", "response")


@dataclass(frozen=True)
class GenItem:
    id: str
    messages: tuple[Message, ...]
    reference: str
    source: str


def load_gen_items(
    path: str, fmt: str = "auto", columns: dict[str, str] | None = None
) -> list[GenItem]:
    file = Path(path)
    kind = fmt if fmt != "auto" else _detect(file)
    if kind == "pubmedqa":
        return _pubmedqa(file)
    if kind in ("alpaca", "sharegpt"):
        return [
            GenItem(c.source.rsplit(":", 1)[-1], c.messages[:-1], c.messages[-1].content, c.source)
            for c in read_sft(file, kind)
        ]
    return _columns(file, columns or {})


def _detect(file: Path) -> str:
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(file))
        except json.JSONDecodeError:
            data = None
        if (
            isinstance(data, dict)
            and data
            and all(isinstance(v, dict) and "QUESTION" in v for v in list(data.values())[:5])
        ):
            return "pubmedqa"
    _, record = next(iter_json_records(file))
    if "conversations" in record or "messages" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    return "columns"


def _pubmedqa(file: Path) -> list[GenItem]:
    data = json.loads(read_text(file))
    items = []
    for pmid, record in data.items():
        source = f"{file} (PMID {pmid})"
        if not isinstance(record.get("LONG_ANSWER"), str) or not isinstance(
            record.get("QUESTION"), str
        ):
            raise DataError(f"{source}: needs QUESTION and LONG_ANSWER strings (PubMedQA)")
        prompt = "\n".join([*map(str, record.get("CONTEXTS") or []), record["QUESTION"]])
        items.append(GenItem(pmid, (Message("user", prompt),), record["LONG_ANSWER"], source))
    return items


def _pick(
    record: dict[str, Any], given: str | None, defaults: Sequence[str], what: str, source: str
) -> str:
    names = [given] if given else [n for n in defaults if n in record]
    if not names or names[0] not in record:
        raise DataError(
            f"{source}: no {what} field (tried {given or ', '.join(defaults)}); "
            f"fields are {', '.join(record)}; map it with columns.{what}"
        )
    value = record[names[0]]
    if not isinstance(value, str):
        raise DataError(
            f"{source}: field {names[0]!r} must be a string, got {type(value).__name__}"
        )
    return value


def _columns(file: Path, columns: dict[str, str]) -> list[GenItem]:
    items = []
    for line, record in iter_json_records(file):
        source = f"{file}:{line}"
        prompt = _pick(record, columns.get("prompt"), PROMPT_FIELDS, "prompt", source)
        reference = _pick(record, columns.get("reference"), REFERENCE_FIELDS, "reference", source)
        system = record.get(columns.get("system", "system"))
        messages = (Message("system", system),) if isinstance(system, str) and system else ()
        item_id = str(record.get(columns.get("id", "id"), line))
        items.append(GenItem(item_id, (*messages, Message("user", prompt)), reference, source))
    return items


def score_outputs(
    predictions: Sequence[str],
    references: Sequence[str],
    language: str,
    token_counts: Sequence[int] | None,
    markers: Sequence[str] | None,
) -> tuple[dict, list[dict]]:
    """results (metrics raw/no_think, leakage) and per-item scores for a set of outputs."""
    language = record_languages(references) if language == "auto" else language
    metrics, metric_items = raw_and_stripped(predictions, references, language)
    if not isinstance(language, str):  # a mixed file: each record's language is kept
        metrics["language"] = "mixed"
        metrics["languages"] = {lg: language.count(lg) for lg in sorted(set(language))}
        metric_items = [{**m, "language": lg} for m, lg in zip(metric_items, language, strict=True)]
    leakage, leak_items = leakage_summary(predictions, token_counts, markers or DEFAULT_MARKERS)
    items = [{**m, "leakage": lk} for m, lk in zip(metric_items, leak_items, strict=True)]
    block = gen_uncertainty(predictions, references, language, items)
    results = {"n": len(predictions), "metrics": metrics, "leakage": leakage}
    return {**results, "uncertainty": block, "uncertainty_settings": SETTINGS}, items


def generate_answers(
    items: Sequence[GenItem],
    backend: Backend,
    template: Any,
    enable_thinking: bool,
    decoding: dict[str, Any],
) -> list[dict[str, Any]]:
    """Render each prompt with the training template and generate; one record per item.

    `prediction` (what is scored) is decoded with skip_special_tokens=True, as LLaMA-Factory
    decodes before its metrics; `raw_prediction` keeps the special tokens."""
    prompts = [
        template.render_prompt(backend.tokenizer, item.messages, enable_thinking) for item in items
    ]
    outputs = backend.generate(prompts, decoding, template.stop_token_ids(backend.tokenizer))
    return [
        {
            "id": item.id,
            "source": item.source,
            "prompt": prompt,
            # scored: decoded with skip_special_tokens=True, as LLaMA-Factory scores it
            "prediction": out.text if out.scored_text is None else out.scored_text,
            "raw_prediction": out.text,
            "reference": item.reference,
            "tokens": out.tokens,
            "stopped": out.stopped,
        }
        for item, prompt, out in zip(items, prompts, outputs, strict=True)
    ]
