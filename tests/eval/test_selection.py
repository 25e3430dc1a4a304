"""Which items `eval mcq` scores: PubMedQA's official test split, ids files, dotted columns,
seeded samples and a limit stratified by subject."""

from __future__ import annotations

import csv
import json
import random

import pytest

from medmerge.errors import ConfigError, DataError
from medmerge.eval.mcq_data import load_mcq
from medmerge.eval.pubmedqa_split import TEST_PMIDS
from medmerge.eval.selection import select


def write_ori_pqal(path, test_count=500, other_count=500):
    """ori_pqal.json's layout: PQA-L's 1,000 items, 500 of them the official test PMIDs."""
    pmids = sorted(TEST_PMIDS)[:test_count] + [str(90000000 + i) for i in range(other_count)]
    random.Random(0).shuffle(pmids)
    data = {
        p: {
            "QUESTION": f"Question {p}?",
            "CONTEXTS": [f"Context of {p}."],
            "LABELS": ["RESULTS"],
            "MESHES": [],
            "final_decision": ("yes", "no", "maybe")[int(p) % 3],
            "LONG_ANSWER": "Because.",
        }
        for p in pmids
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return data


def test_pubmedqa_split_test_is_the_official_500(tmp_path):
    write_ori_pqal(tmp_path / "ori_pqal.json")
    items = load_mcq([str(tmp_path / "ori_pqal.json")])
    assert len(items) == 1000
    test = select(items, "test", None, None, 0, None)
    assert len(test) == 500 and {i.id for i in test} == TEST_PMIDS
    assert len(select(items, "train", None, None, 0, None)) == 500


def test_ground_truth_file_selects_ids_and_is_explained_as_data(tmp_path):
    data = write_ori_pqal(tmp_path / "ori_pqal.json")
    truth = {p: r["final_decision"] for p, r in data.items() if p in TEST_PMIDS}
    (tmp_path / "test_ground_truth.json").write_text(json.dumps(truth, indent=4))
    items = load_mcq([str(tmp_path / "ori_pqal.json")])
    chosen = select(items, None, str(tmp_path / "test_ground_truth.json"), None, 0, None)
    assert len(chosen) == 500
    assert all(("yes", "no", "maybe")[i.answer_index] == truth[i.id] for i in chosen)
    with pytest.raises(DataError, match=r"labels only.*--ids-file"):
        load_mcq([str(tmp_path / "test_ground_truth.json")])


def test_dotted_columns_read_multimedqa_wrapped_records(tmp_path):
    rows = [
        {
            "id": f"q{i}",
            "data": {
                "Question": f"Question {i}?",
                "Options": {"A": "one", "B": "two", "C": "three", "D": "four"},
                "Correct Option": "ABCD"[i % 4],
            },
        }
        for i in range(5)
    ]
    path = tmp_path / "multimedqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = {
        "question": "data.Question",
        "answer": "data.Correct Option",
        "option_columns": ",".join(f"data.Options.{k}" for k in "ABCD"),
    }
    items = load_mcq([str(path)], "columns", columns=columns)
    assert [i.answer_index for i in items] == [0, 1, 2, 3, 0]
    assert items[2].question == "Question 2?" and items[2].options[1] == "two"
    assert items[3].id == "q3"


def write_cmmlu_folder(folder, counts):
    folder.mkdir()
    for subject, n in counts.items():
        with open(folder / f"{subject}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
            for i in range(n):
                writer.writerow([i, f"{subject} 问题 {i}", "甲", "乙", "丙", "丁", "ABCD"[i % 4]])


def test_limit_is_stratified_by_subject_and_sample_is_seeded(tmp_path):
    write_cmmlu_folder(tmp_path / "cmmlu", {"anatomy": 10, "genetics": 2, "virology": 10})
    items = load_mcq([str(tmp_path / "cmmlu")])
    limited = select(items, None, None, None, 0, 10)
    counts = {s: sum(i.subject == s for i in limited) for s in ("anatomy", "genetics", "virology")}
    assert counts == {"anatomy": 4, "genetics": 2, "virology": 4}
    assert [i.id for i in limited] == [i.id for i in items if i in limited]  # file order
    sampled = select(items, None, None, 7, 3, None)
    expected = sorted(random.Random(3).sample(range(len(items)), 7))
    assert [i.id for i in sampled] == [items[k].id for k in expected]
    with pytest.raises(ConfigError, match="more than"):
        select(items, None, None, 100, 0, None)


def test_split_by_file_name_and_refused_when_empty(tmp_path):
    (tmp_path / "mmlu").mkdir()
    for split in ("test", "dev"):
        rows = [[f"{split} q{i}", "a", "b", "c", "d", "A"] for i in range(3)]
        with open(tmp_path / "mmlu" / f"anatomy_{split}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    items = load_mcq([str(tmp_path / "mmlu")])
    assert {i.question[:3] for i in select(items, "dev", None, None, 0, None)} == {"dev"}
    with pytest.raises(DataError, match="none of the 6 items"):
        select(items, "validation", None, None, 0, None)


def test_limit_within_one_file_is_the_first_n_as_lm_eval(tmp_path):
    rows = [
        {
            "question": f"q{i}",
            "options": {"A": "a", "B": "b", "C": "c", "D": "d"},
            "answer_idx": "A",
            "meta_info": "step1" if i % 2 else "step2&3",
        }
        for i in range(8)
    ]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_mcq([str(path)])
    assert [i.question for i in select(items, None, None, None, 0, 3)] == ["q0", "q1", "q2"]
