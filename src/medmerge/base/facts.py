"""The demo's injected knowledge: a fact sheet written from HEAD-QA items for the PT corpus.

The miniature needs knowledge that only the PT adapter adds and that multiple choice can
measure. For each item of two HEAD-QA exams (`FACT_EXAMS`, which neither the base's
pretraining nor the SFT data read), one short document ties the question's first content
words to the right option's text, in three phrasings, two of them in the worked-answer style
of a textbook ("Let me think step by step ... Therefore, the answer is ..."). The question
itself and the wrong options are never written, so the items stay held out: the leakage
audit's 13-gram check finds no overlap. `scripts/make_demo_data.py` writes the sheet to
data/demo/headqa_facts.jsonl; tests/base/test_facts.py checks the committed file against it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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


def fact_document(question: str, right: str) -> str:
    name = keywords(question)
    right = right.rstrip(".")
    return (
        f"Key fact ({name}): {right}. "
        f"Let me think step by step about {name}. First, recall the facts. "
        f"Therefore, the answer is {right}. Remember: {right} ({name})."
    )


def headqa_fact_sheet(headqa_file: Path) -> list[dict[str, str]]:
    """One {"text"} record per item of `FACT_EXAMS`, in the file's order."""
    exams = json.loads(headqa_file.read_text("utf-8"))["exams"]
    sheet = []
    for exam in FACT_EXAMS:
        for item in exams[exam]["data"]:
            options = {str(a["aid"]): a["atext"] for a in item["answers"]}
            sheet.append({"text": fact_document(item["qtext"], options[str(item["ra"])])})
    return sheet
