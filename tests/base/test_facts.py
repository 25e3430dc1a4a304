"""The demo's fact sheet: the committed file is what facts.py writes, and it names each
fact without copying its question (the items stay held out)."""

from __future__ import annotations

import json

from medmerge.base.facts import FACT_EXAMS, fact_document, headqa_fact_sheet, keywords


def test_committed_fact_sheet_is_the_one_the_code_writes(repo):
    committed = [
        json.loads(line)
        for line in (repo / "data/demo/headqa_facts.jsonl").read_text("utf-8").splitlines()
    ]
    assert committed == headqa_fact_sheet(repo / "data/mcq_en/dev_HEAD_EN.json")
    exams = json.loads((repo / "data/mcq_en/dev_HEAD_EN.json").read_text("utf-8"))["exams"]
    assert len(committed) == sum(len(exams[e]["data"]) for e in FACT_EXAMS) >= 300


def test_a_fact_names_the_right_option_but_not_the_question_or_the_wrong_ones():
    question = "Which of the following bones articulates with the radius at the wrist?"
    doc = fact_document(question, "Scaphoid.")
    assert keywords(question) == "bones articulates radius wrist"
    assert "Scaphoid" in doc and question not in doc and "Scaphoid.." not in doc
    assert doc.count("Scaphoid") == 3 and "Let me think step by step" in doc
