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
    assert 300 <= len(committed) <= sum(len(exams[e]["data"]) for e in FACT_EXAMS)


def test_a_fact_names_the_right_option_but_not_the_question_or_the_wrong_ones():
    question = "Which of the following bones articulates with the radius at the wrist?"
    doc = fact_document(question, "Scaphoid.")
    assert keywords(question) == "bones articulates radius wrist"
    assert "Scaphoid" in doc and question not in doc and "Scaphoid.." not in doc
    assert doc.count("Scaphoid") == 4 and "<think>\nLet me think step by step" in doc


def test_no_fact_shares_a_13_gram_with_any_headqa_item(repo):
    from medmerge.audit.leakage import ngrams, tokens
    from medmerge.audit.records import read_records

    headqa = repo / "data/mcq_en/dev_HEAD_EN.json"
    items = set().union(*(ngrams(tokens(text), 13) for _, text in read_records(headqa)))
    sheet = [json.loads(line)["text"] for line in (repo / "data/demo/headqa_facts.jsonl").open()]
    assert not any(ngrams(tokens(doc), 13) & items for doc in sheet)
    long_answer = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    assert "fourteen" in fact_document("Q words here", long_answer)
    assert "thirteen" not in fact_document("Q words here", long_answer, max_words=12)
