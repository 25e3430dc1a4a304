"""The demo's injected knowledge: a fact sheet written from HEAD-QA items for the PT corpus.

The miniature needs knowledge that only the PT adapter adds and that multiple choice can
measure. For each item of two HEAD-QA exams (`FACT_EXAMS`, which neither the base's
pretraining nor the SFT data read), one short document ties the question's first content
words to the right option's text, in three phrasings: a note, a worked answer whose
reasoning sits in a `<think>` block ("Let me think step by step ... Therefore, the answer is
..."), as the reasoning traces in today's domain corpora do, and a reminder. The question
itself and the wrong options are never written, and a right option long enough to share a
13-gram with any HEAD-QA item is quoted only as far as it shares none (a fact that cannot be
written without one is left out), so the items stay held out: the leakage audit finds no
overlap. `scripts/make_demo_data.py` writes the sheet to data/demo/headqa_facts.jsonl;
tests/base/test_facts.py checks the committed file against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medmerge.audit.leakage import ngrams, tokens
from medmerge.audit.records import read_records

AUDIT_NGRAM = 13  # the pipeline's audit_ngram
FACT_EXAMS = ("Cuaderno_2015_1_E", "Cuaderno_2015_1_F")  # nursing, pharmacology
KEYWORDS = 7  # content words of the question that name the fact
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "of",
        "in",
        "on",
        "to",
        "is",
        "are",
        "was",
        "were",
        "which",
        "what",
        "following",
        "for",
        "with",
        "by",
        "from",
        "and",
        "or",
        "at",
        "as",
        "be",
        "that",
        "this",
        "it",
        "its",
        "not",
        "who",
        "whose",
        "when",
        "how",
    ]
)


def keywords(question: str, count: int = KEYWORDS) -> str:
    """The question's first `count` content words, in order: the fact's name, not its text."""
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z\-]+", question) if w.lower() not in _STOP]
    return " ".join(words[:count])


def fact_document(question: str, right: str, max_words: int | None = None) -> str:
    """The fact as a note, then as a worked answer whose reasoning sits in a think block:
    the PT corpus carries the thinking habit as domain text with reasoning traces does."""
    name = keywords(question)
    right = " ".join(right.rstrip(".").split()[:max_words])
    return (
        f"Key fact ({name}): {right}.\n"
        f"<think>\nLet me think step by step about {name}. First, recall the facts. "
        f"Therefore, the answer is {right}.\n</think>\n\n"
        f"The answer is {right}. Remember: {right} ({name})."
    )


def _held_out_fact(question: str, right: str, grams: set, n: int) -> str | None:
    """The fact with as much of the right option as shares no n-gram with `grams`."""
    for max_words in (None, n - 1, 8, 4):
        doc = fact_document(question, right, max_words)
        if not ngrams(tokens(doc), n) & grams:
            return doc
    return None


def headqa_fact_sheet(headqa_file: Path, n: int = AUDIT_NGRAM) -> list[dict[str, str]]:
    """One {"text"} record per item of `FACT_EXAMS` that can be written without sharing an
    n-gram with any item of the file (the audit's tokens), in the file's order."""
    exams = json.loads(headqa_file.read_text("utf-8"))["exams"]
    grams = set().union(*(ngrams(tokens(text), n) for _, text in read_records(headqa_file)))
    sheet = []
    for exam in FACT_EXAMS:
        for item in exams[exam]["data"]:
            options = {str(a["aid"]): a["atext"] for a in item["answers"]}
            doc = _held_out_fact(item["qtext"], options[str(item["ra"])], grams, n)
            if doc is not None:
                sheet.append({"text": doc})
    return sheet
