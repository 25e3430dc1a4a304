"""Multiple choice as data: a prompt format, the choices, the target; scored two ways.

loglik: each option's continuation is scored given the same context; the prediction is the
  argmax of the summed log-probs (accuracy) and of log-prob / UTF-8 bytes of the
  continuation (length-normalised accuracy, as lm-eval's acc_norm).
generate: greedy answer, think blocks removed, the letters found by `extract_letters`; when
  none is found the model is asked once more for the letter only; still none is invalid.
Continuations: the letter (" B" after a plain-text "Answer:" with lm-eval's space delimiter,
"B" right after the chat template's assistant header) or the option text.
"""

from __future__ import annotations

import random
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medmerge.data.readers import Message
from medmerge.eval.backends import Backend, LoglikRequest
from medmerge.eval.leakage import THINK_CLOSE, THINK_OPEN, strip_think, think_spans
from medmerge.eval.mcq_formats import LETTERS, McqItem
from medmerge.eval.uncertainty import mcq_uncertainty


@dataclass(frozen=True)
class McqFormat:
    """The words around a question, per language."""

    header: str  # {subject} filled in; used when the item has a subject
    answer_label: str
    instruction: str  # chat mode: what the user turn asks for
    retry: str

    def block(self, item: McqItem) -> str:
        options = "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(item.options))
        return f"{item.question}\n{options}\n{self.answer_label}"


FORMATS = {
    "en": McqFormat(
        header="The following are multiple choice questions (with answers) about {subject}.",
        answer_label="Answer:",
        instruction="Answer with the letter of the correct option.",
        retry="Reply with only the letter of the correct option.",
    ),
    "zh": McqFormat(
        header="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。",
        answer_label="答案：",
        instruction="请直接给出正确答案的选项字母。",
        retry="请只回答正确选项的字母。",
    ),
}


def few_shot_examples(item: McqItem, pool: Sequence[McqItem], k: int, seed: int) -> list[McqItem]:
    """k exemplars drawn with a per-item seeded generator; same subject when there are enough."""
    if k == 0:
        return []
    candidates = [p for p in pool if p.id != item.id or p.source != item.source]
    same = [p for p in candidates if p.subject == item.subject]
    source = same if len(same) >= k else candidates
    return random.Random(f"{seed}:{item.id}").sample(source, min(k, len(source)))


def question_text(item: McqItem, shots: Sequence[McqItem], fmt: McqFormat) -> str:
    """Header, exemplars with their answers, then the question ending in the answer label."""
    parts = [fmt.header.format(subject=item.subject.replace("_", " "))] if item.subject else []
    parts += [f"{fmt.block(s)} {LETTERS[s.answer_index]}" for s in shots]
    parts.append(fmt.block(item))
    return "\n\n".join(parts)


@dataclass(frozen=True)
class McqTask:
    """How one run asks its questions: language format, chat template or plain text."""

    fmt: McqFormat
    template: Any | None  # a ChatTemplate for chat mode, else None
    tokenizer: Any
    enable_thinking: bool
    continuation: str = "letter"

    def context(
        self, item: McqItem, shots: Sequence[McqItem], extra_turns: Sequence[Message] = ()
    ) -> str:
        text = question_text(item, shots, self.fmt)
        if self.template is None:
            return text
        messages = [Message("user", f"{text}\n{self.fmt.instruction}".rstrip()), *extra_turns]
        return self.template.render_prompt(self.tokenizer, messages, self.enable_thinking)

    def continuations(self, item: McqItem) -> list[str]:
        space = "" if self.template is not None else " "
        if self.continuation == "text":
            return [space + text for text in item.options]
        return [space + LETTERS[i] for i in range(len(item.options))]


def option_loglikelihoods(
    backend: Backend, contexts: Sequence[str], continuations: Sequence[Sequence[str]]
) -> list[list[float]]:
    """Per item, the log-likelihood of each of its continuations after its context, all
    items' requests sent to the backend as one list."""
    requests = [
        LoglikRequest(c, x) for c, xs in zip(contexts, continuations, strict=True) for x in xs
    ]
    values = iter(backend.loglikelihood(requests))
    return [[next(values) for _ in xs] for xs in continuations]


def score_loglik(
    task: McqTask, items: Sequence[McqItem], shots: Sequence[Sequence[McqItem]], backend: Backend
) -> list[dict[str, Any]]:
    """One record per item with context, continuations, log-likelihoods and predictions."""
    contexts = [task.context(item, s) for item, s in zip(items, shots, strict=True)]
    conts = [task.continuations(item) for item in items]
    records = []
    for item, context, continuations, scores in zip(
        items, contexts, conts, option_loglikelihoods(backend, contexts, conts), strict=True
    ):
        normed = [
            s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores, continuations, strict=True)
        ]
        predicted = max(range(len(scores)), key=scores.__getitem__)
        predicted_norm = max(range(len(normed)), key=normed.__getitem__)
        records.append(
            loglik_record(item, context, continuations, scores, predicted, predicted_norm)
        )
    return records


def loglik_record(
    item: McqItem,
    context: str,
    continuations: list[str],
    scores: list[float],
    predicted: int,
    predicted_norm: int,
) -> dict[str, Any]:
    """The predictions.jsonl record of one item scored by log-likelihood."""
    return _record(item, context, continuations, scores, {predicted}) | {
        "predicted_index_norm": predicted_norm,
        "correct_norm": {predicted_norm} == set(item.answers),
    }


def _record(
    item: McqItem,
    context: str,
    continuations: list[str] | None,
    scores: list[float] | None,
    predicted: set[int] | None,
) -> dict[str, Any]:
    return {
        "id": item.id,
        "subject": item.subject,
        "source": item.source,
        "context": context,
        "continuations": continuations,
        "loglikelihoods": scores,
        "predicted_index": min(predicted) if predicted else None,
        "predicted_indices": sorted(predicted) if predicted else [],
        "answer_index": item.answer_index,
        "answer_indices": sorted(item.answers),
        "correct": bool(predicted) and predicted == set(item.answers),
    }


# Tried in order on the output with think blocks removed; the first that matches wins.
LETTER_PATTERNS = (
    # 1. the reply opens with the letter(s), then punctuation or the end: "B", "(B)", "B. text",
    #    "A、C", "AC" (several letters only count for multi-answer items, see `summarize`)
    r"^\s*[(（\[]?\s*(?P<letters>[A-J](?:\s*(?:,|，|、|和|及|and)?\s*[A-J])*)\s*"
    r"(?:[)）\]]|$|[.．:：、,，。;；\n])",
    # 2. an explicit statement, the first one: "answer is B", "Answer: (C)", "the correct
    #    option is C, not A", "answer is c", "答案是B", "答案：AC", "选B"
    r"(?:(?i:answer|(?:correct\s+)?(?:option|choice))\s*(?:(?i:is)|:)?|答案\s*(?:是|为|应为)?"
    r"|选择?)\s*[:：]?\s*[(（\[]?\s*(?P<letters>[A-J]+|[a-j])(?![A-Za-z])",
)


def extract_letters(text: str, n_options: int) -> set[int] | None:
    """The chosen option indices: by LETTER_PATTERNS (a lower-case letter only after an explicit
    "answer is"), then by the only distinct standalone capital letter among the options';
    None when nothing is found."""
    valid = LETTERS[:n_options]
    for pattern in LETTER_PATTERNS:
        match = re.search(pattern, text)
        if match:
            found = {LETTERS.index(c.upper()) for c in match.group("letters") if c.upper() in valid}
            if found:
                return found
    lone = set(re.findall(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", text))
    if len(lone) == 1:
        return {LETTERS.index(lone.pop())}
    return None


def extract_by_text(text: str, options: Sequence[str]) -> set[int] | None:
    hits = {i for i, o in enumerate(options) if o and o.lower() in text.lower()}
    return hits if len(hits) == 1 else None


def answer_generate(
    task: McqTask,
    items: Sequence[McqItem],
    shots: Sequence[Sequence[McqItem]],
    backend: Backend,
    max_new_tokens: int,
) -> list[dict[str, Any]]:
    """Greedy answers, one retry for those with no letter; one record per item."""
    decoding = {"do_sample": False, "max_new_tokens": max_new_tokens, "seed": 0}
    stops = task.template.stop_token_ids(task.tokenizer)
    contexts = [task.context(item, s) for item, s in zip(items, shots, strict=True)]
    generations = backend.generate(contexts, decoding, stops)
    outputs = [g.text for g in generations]
    found = [_letters(o, item) for o, item in zip(outputs, items, strict=True)]
    retry = [i for i, f in enumerate(found) if f is None]
    retry_contexts = [
        task.context(
            items[i], shots[i], (Message("assistant", outputs[i]), Message("user", task.fmt.retry))
        )
        for i in retry
    ]
    retry_outputs = (
        [g.text for g in backend.generate(retry_contexts, decoding, stops)] if retry else []
    )
    records = [
        _record(item, c, None, None, f) | {"raw_output": o}
        for item, c, o, f in zip(items, contexts, outputs, found, strict=True)
    ]
    for i, context, output in zip(retry, retry_contexts, retry_outputs, strict=True):
        letters = _letters(output, items[i])
        records[i] = _record(items[i], contexts[i], None, None, letters) | {
            "raw_output": outputs[i],
            "retry_context": context,
            "retry_output": output,
        }
    _mark_unanswered(records, generations, _prefills_think(contexts), max_new_tokens)
    return records


def _mark_unanswered(
    records: list[dict[str, Any]], generations: Sequence[Any], prefilled: bool, limit: int
) -> None:
    """Tell truncated thinking (stopped inside a think block) from invalid answers, and warn
    when most answers ran into max_new_tokens."""
    for record, generation in zip(records, generations, strict=True):
        unanswered = not record["predicted_indices"]
        truncated = unanswered and thinking_unfinished(generation.text, prefilled)
        record["truncated_thinking"] = truncated
        record["invalid"] = unanswered and not truncated
        record["hit_max_new_tokens"] = not generation.stopped
    hit = sum(r["hit_max_new_tokens"] for r in records)
    if records and hit > len(records) / 2:
        print(
            f"medmerge: warning: {hit} of {len(records)} answers stopped at max_new_tokens "
            f"{limit}; raise --max-new-tokens (thinking answers need hundreds)",
            file=sys.stderr,
        )


def _prefills_think(contexts: Sequence[str]) -> bool:
    """The rendered prompt ends inside an opened think block (the model continues it)."""
    if not contexts:
        return False
    spans = think_spans(contexts[0])
    return bool(spans) and not THINK_CLOSE.search(contexts[0], spans[-1].inner_start)


def answer_part(output: str) -> str:
    """The output after its thinking: think blocks removed, and, when a closing tag comes
    before any opening one (the template prefilled `<think>`), everything up to it."""
    closing, opening = THINK_CLOSE.search(output), THINK_OPEN.search(output)
    if closing is not None and (opening is None or closing.start() < opening.start()):
        output = output[closing.end() :]
    return strip_think(output)


def thinking_unfinished(output: str, prefilled: bool) -> bool:
    """The output stops inside a think block: one opened (by it, or by the template when
    `prefilled`) and never closed."""
    spans = think_spans(output)
    if spans and not THINK_CLOSE.search(output, spans[-1].inner_start):
        return True
    return prefilled and not THINK_CLOSE.search(output) and not spans


def _letters(output: str, item: McqItem) -> set[int] | None:
    answer = answer_part(output)
    return extract_letters(answer, len(item.options)) or extract_by_text(answer, item.options)


def summarize(records: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Accuracy (and acc_norm in loglik mode), invalid rate, and the same per subject; each
    with its n, standard error and Wilson CI in `uncertainty`."""
    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_subject[record["subject"] or "all"].append(record)

    def stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        n = len(rows)
        out: dict[str, Any] = {
            "n": n,
            "accuracy": sum(r["correct"] for r in rows) / n if n else 0.0,
        }
        if mode == "loglik":
            out["accuracy_norm"] = sum(r["correct_norm"] for r in rows) / n if n else 0.0
        out["invalid_rate"] = sum(r.get("invalid", False) for r in rows) / n if n else 0.0
        if mode == "generate":
            truncated = sum(r.get("truncated_thinking", False) for r in rows)
            out["truncated_thinking_rate"] = truncated / n if n else 0.0
        return {**out, "uncertainty": mcq_uncertainty(rows, mode)}

    return {**stats(records), "per_subject": {s: stats(r) for s, r in sorted(by_subject.items())}}
