"""Generate mode: letters after (possibly prefilled) thinking, truncated thinking apart from
invalid answers, lower-case letters, "the correct option is C, not A"."""

from __future__ import annotations

import pytest

from medmerge.eval.backends import Generation
from medmerge.eval.config import McqEvalConfig
from medmerge.eval.mcq import (
    _mark_unanswered,
    answer_part,
    extract_letters,
    summarize,
    thinking_unfinished,
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Hmm, maybe B. Wait, no.</think>\n\nC", {2}),  # the template opened <think>
        ("<think>A or B?</think>The answer is D.", {3}),
        ("the answer is c", {2}),
        ("The correct option is C, not A.", {2}),
        ("Answer: (b)", {1}),
        ("B", {1}),
        ("I think A and C are both wrong.", None),
    ],
)
def test_letters_found(output, expected):
    assert extract_letters(answer_part(output), 4) == expected


def test_a_lowercase_article_is_no_answer():
    assert extract_letters("a patient with fever", 4) is None


def test_truncated_thinking_is_not_invalid(capsys):
    records = [
        {"subject": "", "predicted_indices": [], "correct": False},
        {"subject": "", "predicted_indices": [], "correct": False},
        {"subject": "", "predicted_indices": [2], "correct": True},
    ]
    outputs = [
        Generation("<think>Let me weigh A against B, then", 64, False),
        Generation("I do not know.", 5, True),
        Generation("</think>C", 3, True),
    ]
    _mark_unanswered(records, outputs, prefilled=False, limit=64)
    assert [r["truncated_thinking"] for r in records] == [True, False, False]
    assert [r["invalid"] for r in records] == [False, True, False]
    summary = summarize(records, "generate")
    assert summary["truncated_thinking_rate"] == pytest.approx(1 / 3)
    assert summary["invalid_rate"] == pytest.approx(1 / 3)
    assert summary["uncertainty"]["truncated_thinking_rate"]["n"] == 3
    assert capsys.readouterr().err == ""  # 1 of 3 hit the limit: no warning


def test_prefilled_think_without_a_closing_tag_is_truncated():
    assert thinking_unfinished("so the answer might be", prefilled=True)
    assert not thinking_unfinished("so the answer might be", prefilled=False)
    assert not thinking_unfinished("done</think>B", prefilled=True)


def test_most_answers_at_the_limit_warn(capsys):
    records = [{"subject": "", "predicted_indices": [0]} for _ in range(3)]
    outputs = [Generation("A", 32, False)] * 2 + [Generation("A", 1, True)]
    _mark_unanswered(records, outputs, prefilled=False, limit=32)
    assert "2 of 3 answers stopped at max_new_tokens 32" in capsys.readouterr().err


def test_default_answer_length_fits_thinking():
    common = {"model": "m", "data": ["d"], "out": "o", "mode": "generate"}
    assert McqEvalConfig(**common).answer_tokens() == 32
    assert McqEvalConfig(**common, enable_thinking=True).answer_tokens() == 2048
    assert McqEvalConfig(**common, max_new_tokens=7).answer_tokens() == 7
