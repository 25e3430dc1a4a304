"""Datasets kept as LLaMA-Factory users keep them: dataset_info.json and its formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmerge.data.lf_datasets import dataset_specs, spec_conversations, spec_texts
from medmerge.errors import ConfigError, DataError

LF_DATA = Path(__file__).parent / "llamafactory_data"


def folder(tmp_path: Path, entries: dict, files: dict[str, str]) -> Path:
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries), "utf-8")
    for name, text in files.items():
        (tmp_path / name).write_text(text, "utf-8")
    return tmp_path


def roles(conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conversation.messages]


def test_llamafactorys_own_folder_reads_unchanged():
    specs = dataset_specs(["identity", "alpaca_en_demo", "alpaca_zh_demo"], LF_DATA)
    identity, _ = spec_conversations(specs[0], None, False)
    assert len(identity) == 91
    assert roles(identity[0]) == [
        ("user", "hi"),
        (
            "assistant",
            "Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?",
        ),
    ]
    alpaca, _ = spec_conversations(specs[1], 5, False)  # max_samples counts per dataset
    assert len(alpaca) == 5
    record = json.loads((LF_DATA / "alpaca_en_demo.json").read_text("utf-8"))[0]
    user = "\n".join(part for part in (record["instruction"], record["input"]) if part)
    assert roles(alpaca[0]) == [("user", user), ("assistant", record["output"])]
    assert alpaca[0].source.endswith("alpaca_en_demo.json:2")


def test_llamafactorys_pt_sets_read_the_prompt_column_verbatim():
    c4, wiki = dataset_specs(["c4_demo", "wiki_demo"], LF_DATA)
    texts = spec_texts(c4, None)
    lines = (LF_DATA / "c4_demo.jsonl").read_text("utf-8").splitlines()
    assert texts == [json.loads(line)["text"] for line in lines]
    assert spec_texts(wiki, 1) == [(LF_DATA / "wiki_demo.txt").read_text("utf-8").split("\n")[0]]


def test_tool_turns_are_refused_naming_the_record_or_skipped():
    [spec] = dataset_specs(["glaive_toolcall_en_demo"], LF_DATA)
    with pytest.raises(
        DataError, match=r"glaive_toolcall_en_demo.json:2: the record describes tools"
    ):
        spec_conversations(spec, None, False)
    assert spec_conversations(spec, None, True) == ([], 3)


def test_unsupported_entries_are_refused_all_at_once():
    with pytest.raises(ConfigError) as info:
        dataset_specs(["alpaca_en", "dpo_en_demo", "mllm_demo", "identiy"], LF_DATA)
    message = str(info.value)
    assert "\n" not in message
    assert "dataset 'alpaca_en': 'hf_hub_url' loads from the Hugging Face hub" in message
    assert "dataset 'dpo_en_demo': ranking (preference) data is not supported" in message
    assert "dataset 'mllm_demo': column 'images'" in message
    assert "no dataset 'identiy' (did you mean 'identity'?)" in message


def test_sharegpt_system_column_custom_tags_and_openai(tmp_path):
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
    }
    entries = {
        "chat": {
            "file_name": "chat.jsonl",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "system": "sys"},
            "tags": tags,
        },
        "oai": {
            "file_name": "oai.jsonl",
            "formatting": "openai",
            "columns": {"messages": "messages"},
            "tags": tags,
        },
    }
    records = json.dumps({"messages": turns, "sys": "Be brief."}) + "\n"
    with_system = json.dumps({"messages": [{"role": "system", "content": "S"}, *turns]}) + "\n"
    root = folder(tmp_path, entries, {"chat.jsonl": records, "oai.jsonl": records + with_system})
    chat, oai = dataset_specs(["chat", "oai"], root)
    [conversation], _ = spec_conversations(chat, None, False)
    assert roles(conversation) == [("system", "Be brief."), ("user", "Q"), ("assistant", "A")]
    first, second = spec_conversations(oai, None, False)[0]
    # LLaMA-Factory 0.9.5's OpenAI converter adds this system line to records without tools.
    assert roles(first)[0] == ("system", "detailed thinking off")
    assert roles(second)[0] == ("system", "S\ndetailed thinking off")


def test_csv_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"q": ["Q1", "Q2"], "a": ["A1", "A2"]}), tmp_path / "qa.parquet")
    columns = {"prompt": "q", "response": "a"}
    entries = {
        "pq": {"file_name": "qa.parquet", "columns": columns},
        "csv": {"file_name": "qa.csv", "columns": columns},
    }
    root = folder(tmp_path, entries, {"qa.csv": 'q,a\nQ1,"A\nmultiline"\nQ2,A2\n'})
    parquet_set, csv_set = dataset_specs(["pq", "csv"], root)
    convs, _ = spec_conversations(parquet_set, None, False)
    assert [roles(c) for c in convs] == [
        [("user", "Q1"), ("assistant", "A1")],
        [("user", "Q2"), ("assistant", "A2")],
    ]
    assert convs[1].source.endswith("qa.parquet:row 2")
    convs, _ = spec_conversations(csv_set, None, False)
    assert roles(convs[0])[1] == ("assistant", "A\nmultiline")
    assert convs[1].source.endswith("qa.csv:4")


def test_bad_record_is_an_error_by_default_and_counted_when_skipped(tmp_path):
    bad = {"conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]}
    good = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    lines = "".join(json.dumps(r) + "\n" for r in (good, bad, good))
    root = folder(
        tmp_path, {"s": {"file_name": "s.jsonl", "formatting": "sharegpt"}}, {"s.jsonl": lines}
    )
    [spec] = dataset_specs(["s"], root)
    with pytest.raises(DataError, match=r"s.jsonl:2: turn 1 has role 'gpt', expected 'human'"):
        spec_conversations(spec, None, False)
    kept, skipped = spec_conversations(spec, None, True)
    assert (len(kept), skipped) == (2, 1)


def test_missing_dataset_info_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"no dataset_info\.json in --dataset-dir"):
        dataset_specs(["x"], tmp_path)
