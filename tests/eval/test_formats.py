"""Each multiple-choice loader on a tiny file in its official format, plus the bundled data."""

from __future__ import annotations

import json

import pytest

from medmerge.errors import DataError
from medmerge.eval.generation import load_gen_items
from medmerge.eval.mcq_data import detect_format, load_mcq


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, records):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def test_medqa_four_and_five_options(tmp_path):
    five = {
        "question": "Q?",
        "answer": "t5",
        "options": {"A": "t1", "B": "t2", "C": "t3", "D": "t4", "E": "t5"},
        "meta_info": "step1",
        "answer_idx": "E",
    }
    four = {
        "question": "Q4?",
        "answer": "t2",
        "options": {"A": "t1", "B": "t2", "C": "t3", "D": "t4"},
        "meta_info": "step2&3",
        "answer_idx": "B",
        "metamap_phrases": ["x"],
    }
    file = jsonl(tmp_path / "test.jsonl", [five, four])
    assert detect_format(file) == "medqa"
    items = load_mcq([str(file)])
    assert [len(i.options) for i in items] == [5, 4]
    assert [i.answer_index for i in items] == [4, 1]


def medmcqa(cop, i=0):
    return {
        "question": f"q{i}",
        "exp": "",
        "cop": cop,
        "opa": "a",
        "opb": "b",
        "opc": "c",
        "opd": "d",
        "subject_name": "Anatomy",
        "topic_name": "",
        "id": f"id{i}",
        "choice_type": "single",
    }


def test_medmcqa_cop_base_decided_from_file_or_required(tmp_path):
    original = jsonl(tmp_path / "dev.json", [medmcqa(4), medmcqa(1, 1)])
    assert detect_format(original) == "medmcqa"
    assert [i.answer_index for i in load_mcq([str(original)])] == [3, 0]
    hf = jsonl(tmp_path / "hf.jsonl", [medmcqa(0), medmcqa(2, 1)])
    assert [i.answer_index for i in load_mcq([str(hf)])] == [0, 2]
    unclear = jsonl(tmp_path / "unclear.jsonl", [medmcqa(2), medmcqa(3, 1)])
    with pytest.raises(DataError, match="medmcqa_cop_base"):
        load_mcq([str(unclear)])
    assert [i.answer_index for i in load_mcq([str(unclear)], medmcqa_cop_base=1)] == [1, 2]


def test_pubmedqa_ori_pqal(tmp_path):
    data = {
        "123": {
            "QUESTION": "Does X help?",
            "CONTEXTS": ["c1", "c2"],
            "LABELS": ["A", "B"],
            "final_decision": "maybe",
            "LONG_ANSWER": "It may.",
        }
    }
    file = write(tmp_path / "ori_pqal.json", json.dumps(data, indent=1))
    assert detect_format(file) == "pubmedqa"
    (item,) = load_mcq([str(file)])
    assert item.options == ("yes", "no", "maybe") and item.answer_index == 2
    assert item.question.endswith("c2\nDoes X help?")
    (gen,) = load_gen_items(str(file))
    assert gen.reference == "It may."


def test_mmlu_csv_and_hf_layouts(tmp_path):
    csv_file = write(
        tmp_path / "anatomy_test.csv", '"What is ""x"", really?",a,b,c,d,C\nQ2,a,b,c,d,A\n'
    )
    assert detect_format(csv_file) == "mmlu"
    items = load_mcq([str(csv_file)])
    assert items[0].subject == "anatomy" and items[0].answer_index == 2
    assert items[0].question == 'What is "x", really?'
    bad = write(tmp_path / "bad_test.csv", 'Q1,a,b,c,d,A\nWhat is "x", really?,a,b,c,d,C\n')
    with pytest.raises(DataError, match=r"bad_test\.csv:2: 7 cells"):
        load_mcq([str(bad)], "mmlu")
    hf = {"question": "Q", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": 3}
    file = jsonl(tmp_path / "mmlu.jsonl", [hf])
    assert load_mcq([str(file)])[0].answer_index == 3
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([hf, {**hf, "answer": 1}]), tmp_path / "test.parquet")
    assert [i.answer_index for i in load_mcq([str(tmp_path / "test.parquet")])] == [3, 1]


def test_cmmlu_cmexam_ceval(tmp_path):
    cmmlu = write(tmp_path / "anatomy.csv", ",Question,A,B,C,D,Answer\n0,问题,甲,乙,丙,丁,B\n")
    assert detect_format(cmmlu) == "cmmlu"
    assert load_mcq([str(cmmlu)])[0].answer_index == 1
    cmexam = write(
        tmp_path / "test.csv",
        'Question,Options,Answer,Explanation\n问题一,"A 甲\nB 乙\nC 丙\nD 丁\nE 戊",AC,解释\n',
    )
    assert detect_format(cmexam) == "cmexam"
    (item,) = load_mcq([str(cmexam)])
    assert item.answers == {0, 2} and len(item.options) == 5 and item.options[1] == "乙"
    ceval = write(
        tmp_path / "physician_val.csv",
        "id,question,A,B,C,D,answer,explanation\n0,问,甲,乙,丙,丁,D,\n",
    )
    assert detect_format(ceval) == "ceval"
    assert load_mcq([str(ceval)])[0].answer_index == 3


def test_generic_columns(tmp_path):
    file = jsonl(tmp_path / "x.jsonl", [{"q": "Q?", "opts": ["a", "b", "c"], "gold": "b"}])
    items = load_mcq(
        [str(file)], "columns", columns={"question": "q", "options": "opts", "answer": "gold"}
    )
    assert items[0].answer_index == 1 and len(items[0].options) == 3


def test_ten_options_and_too_many(tmp_path):
    options = {chr(65 + i): f"o{i}" for i in range(10)}
    ok = jsonl(tmp_path / "ten.jsonl", [{"question": "Q", "options": options, "answer_idx": "J"}])
    assert load_mcq([str(ok)])[0].answer_index == 9
    bad = jsonl(
        tmp_path / "one.jsonl", [{"question": "Q", "options": {"A": "x"}, "answer_idx": "A"}]
    )
    with pytest.raises(DataError, match="2 to 10"):
        load_mcq([str(bad)])


def test_malformed_records_name_file_and_line(tmp_path):
    good = {"question": "Q", "options": {"A": "a", "B": "b"}, "answer_idx": "A"}
    file = jsonl(tmp_path / "medqa.jsonl", [good, good, {**good, "answer_idx": "Z"}])
    with pytest.raises(DataError, match=r"medqa\.jsonl:3: answer 'Z'"):
        load_mcq([str(file)])
    csv_file = write(
        tmp_path / "anatomy.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,B\n1,q,a,b,c\n"
    )
    with pytest.raises(DataError, match=r"anatomy\.csv:3: 5 cells"):
        load_mcq([str(csv_file)])
    broken = write(tmp_path / "broken.jsonl", json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match=r"broken\.jsonl:2: invalid JSON"):
        load_mcq([str(broken)], "medqa")


def test_bundled_data(repo):
    head = load_mcq([str(repo / "data/mcq_en/dev_HEAD_EN.json")])
    assert len(head) == 1366 and head[0].answer_index == 3 and head[0].subject
    cmmlu = load_mcq([str(repo / "data/mcq_zh/cmmlu_medical_dev")])
    assert len(cmmlu) == 50 and {i.subject for i in cmmlu} >= {"anatomy", "virology"}
    pubmed = load_mcq([str(repo / "data/qa_en/pubmedqa_pqal_sample.json")])
    assert len(pubmed) == 150 and {i.answer_index for i in pubmed} <= {0, 1, 2}
    meqsum = load_gen_items(str(repo / "data/qa_en/meqsum_sample.jsonl"))
    assert len(meqsum) == 300 and meqsum[0].reference == "Who manufactures cetirizine?"
    alpaca = load_gen_items(str(repo / "data/sft_en/genmedgpt_sample.json"))
    assert alpaca[0].messages[-1].role == "user"
