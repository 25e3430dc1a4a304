"""Readers on the bundled files and on small files with every supported shape and error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmerge.data import Conversation, Message, read_pt_texts, read_sft
from medmerge.errors import ConfigError, DataError


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def lines(*records: object) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def test_bundled_csv_abstracts(data_dir: Path) -> None:
    texts = read_pt_texts(data_dir / "pt" / "medical_abstracts.csv", "medical_abstract")
    assert len(texts) == 800
    assert texts[0].startswith("Obstructive sleep apnea following topical oropharyngeal anes")
    # Kept verbatim, as LLaMA-Factory reads it: this abstract ends with a space.
    assert texts[-1].endswith("not be candidates for revascularization. ")


def test_bundled_jsonl_text(data_dir: Path) -> None:
    texts = read_pt_texts(data_dir / "pt" / "huatuo_zh_text.jsonl")
    assert len(texts) == 800
    assert (
        texts[0]
        == "可能是胆固醇肺炎，需进一步进行纤维支气管镜检查和支气管镜检查以确认病因。对症处理，注意预防并发症。"
    )


def test_bundled_alpaca_json_array(data_dir: Path) -> None:
    path = data_dir / "sft_en" / "genmedgpt_sample.json"
    conversations = read_sft(path)
    assert len(conversations) == 800
    first = conversations[0]
    assert first.source == f"{path}:2"
    assert conversations[1].source == f"{path}:7"
    assert conversations[-1].source == f"{path}:3997"
    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert first.messages[0].content == (
        "If you are a doctor, please answer the medical questions based on the patient's "
        "description.\nDoctor, I have been experiencing sudden and frequent panic attacks. "
        "I don't know what to do."
    )
    assert first.messages[1].content.startswith("Well, based on what you're telling me")


def test_bundled_alpaca_json_lines(data_dir: Path) -> None:
    path = data_dir / "sft_zh" / "huatuo_sample.jsonl"
    conversations = read_sft(path, fmt="alpaca")
    assert len(conversations) == 800
    assert conversations[0].source == f"{path}:1"
    assert conversations[-1].source == f"{path}:800"
    assert conversations[0].messages[0].content.startswith("一名年龄在70岁的女性，出现了晕厥")
    assert conversations[0].messages[1].content.startswith("该病需要进行电极导线、脉冲发生器")


def test_txt_has_one_verbatim_document_per_line(tmp_path: Path) -> None:
    """As HF datasets' text loader (LLaMA-Factory) splits: \\n, \\r\\n, \\r; blank lines stay."""
    path = write(
        tmp_path, "a.txt", "first line\nsame doc\n\n \n\nsecond doc\r\n\r\nthird\rx\u2028y\n"
    )
    assert read_pt_texts(path) == [
        "first line",
        "same doc",
        "",
        " ",
        "",
        "second doc",
        "",
        "third",
        "x\u2028y",
    ]


def test_pt_json_array_and_custom_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.json", '[\n {"body": "one"},\n {"body": "  "},\n {"body": "two"}\n]\n'
    )
    assert read_pt_texts(path, text_column="body") == ["one", "  ", "two"]
    path = write(tmp_path, "b.jsonl", lines({"text": "x"}, {"text": "y"}))
    assert read_pt_texts(path) == ["x", "y"]


def test_pt_csv_with_multiline_cell(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", 'id,text\n1,"two\nlines"\n2,plain\n')
    assert read_pt_texts(path) == ["two\nlines", "plain"]


def test_sharegpt_from_value(tmp_path: Path) -> None:
    record = {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Q1"},
            {"from": "gpt", "value": "A1"},
            {"from": "human", "value": "Q2"},
            {"from": "gpt", "value": "A2"},
        ]
    }
    path = write(tmp_path, "s.jsonl", lines(record))
    assert read_sft(path) == [
        Conversation(
            (
                Message("system", "Be brief."),
                Message("user", "Q1"),
                Message("assistant", "A1"),
                Message("user", "Q2"),
                Message("assistant", "A2"),
            ),
            f"{path}:1",
        )
    ]


def test_sharegpt_role_content_under_messages_and_conversations(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    path = write(
        tmp_path, "s.json", json.dumps([{"messages": turns}, {"conversations": turns}], indent=1)
    )
    expected = (Message("user", "Q"), Message("assistant", "A"))
    assert [(c.messages, c.source) for c in read_sft(path, fmt="sharegpt")] == [
        (expected, f"{path}:2"),
        (expected, f"{path}:14"),
    ]


def test_alpaca_system_history_and_column_mapping(tmp_path: Path) -> None:
    record = {
        "question": "Q2",
        "context": "details",
        "answer": "A2",
        "system": "Be brief.",
        "history": [["Q1", "A1"]],
    }
    path = write(tmp_path, "a.jsonl", lines(record))
    mapping = {"instruction": "question", "input": "context", "output": "answer"}
    assert read_sft(path, columns=mapping)[0].messages == (
        Message("system", "Be brief."),
        Message("user", "Q1"),
        Message("assistant", "A1"),
        Message("user", "Q2\ndetails"),
        Message("assistant", "A2"),
    )


def expect_error(path: Path, message: str, **kwargs: object) -> None:
    reader = (
        read_pt_texts if "text_column" in kwargs or path.suffix in (".txt", ".csv") else read_sft
    )
    with pytest.raises(DataError) as info:
        reader(path, **kwargs)
    assert str(info.value) == message


def test_missing_and_empty_files(tmp_path: Path) -> None:
    expect_error(
        tmp_path / "nope.jsonl", f"{tmp_path / 'nope.jsonl'}: data file not found; check the path"
    )
    empty = write(tmp_path, "e.json", "\n  \n")
    expect_error(empty, f"{empty}: file is empty; add records or point to another file")
    array = write(tmp_path, "e2.json", "[ ]")
    expect_error(array, f"{array}: the JSON array is empty; add records")


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "b.txt", b"ok\nok\nbad \xff byte\n")
    expect_error(
        path, f"{path}:3: bytes that are not UTF-8 (at byte 10); re-save the file as UTF-8"
    )


def test_invalid_json_line_and_array(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", lines({"instruction": "q", "output": "a"}) + "{oops\n")
    expect_error(
        path,
        f"{path}:2: invalid JSON (Expecting property name enclosed in double quotes, column 2); fix the record",
    )
    path = write(tmp_path, "a.json", '[\n {"instruction": "q", "output": "a"}\n {"x": 1}\n]')
    expect_error(path, f"{path}:3: invalid JSON (expected ',' or ']'); fix the array")
    path = write(tmp_path, "b.json", '[\n {"instruction": "q",\n  "output": }\n]')
    expect_error(path, f"{path}:3: invalid JSON (Expecting value, column 13); fix the record")


def test_missing_field_and_wrong_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "a.jsonl",
        lines({"instruction": "q", "output": "a"}, {"instruction": "q", "outptu": "a"}),
    )
    expect_error(
        path,
        f"{path}:2: missing field 'output' (did you mean 'outptu'?); fields are: instruction, outptu; "
        "add it or map it with columns",
        fmt="alpaca",
    )
    path = write(tmp_path, "b.jsonl", lines({"instruction": "q", "output": 3}))
    expect_error(path, f"{path}:1: field 'output' must be a string, got int")
    path = write(tmp_path, "c.jsonl", lines(["q", "a"]))
    expect_error(path, f"{path}:1: expected a JSON object per record, got list")
    path = write(tmp_path, "d.jsonl", lines({"text": 5}))
    expect_error(path, f"{path}:1: field 'text' must be a string, got int", text_column="text")


def test_conversation_shape_errors(tmp_path: Path) -> None:
    ends_with_user = {"conversations": [{"from": "human", "value": "Q"}]}
    out_of_order = {
        "messages": [{"role": "user", "content": "Q"}, {"role": "user", "content": "Q"}]
    }
    bad_role = {"conversations": [{"from": "humna", "value": "Q"}]}
    path = write(tmp_path, "s.jsonl", "\n" + lines(ends_with_user))
    expect_error(path, f"{path}:2: the conversation must end with an assistant turn")
    path = write(tmp_path, "t.jsonl", lines(out_of_order))
    expect_error(
        path,
        f"{path}:1: roles out of order: turn 2 is 'user', expected 'assistant'; "
        "use an optional system turn, then alternate user and assistant",
    )
    path = write(tmp_path, "u.jsonl", lines(bad_role))
    expect_error(
        path,
        f"{path}:1: turn 1 has unsupported role 'humna' (did you mean 'human'?); "
        "use one of human, user, gpt, assistant, system",
    )
    path = write(tmp_path, "v.jsonl", lines({"question": "Q", "answer": "A"}))
    with pytest.raises(
        DataError, match=rf"^{path}:1: cannot tell the format: fields are question, answer;"
    ):
        read_sft(path)


def test_csv_column_missing_lists_columns(data_dir: Path) -> None:
    path = data_dir / "pt" / "medical_abstracts.csv"
    expect_error(
        path,
        f"{path}:1: no column 'medical_abstracts' (did you mean 'medical_abstract'?); "
        "columns are: condition_label, medical_abstract; pass the text column's name",
        text_column="medical_abstracts",
    )


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jsonl", lines({"instruction": "q", "output": "a"}))
    with pytest.raises(
        ConfigError, match="unknown SFT format 'sharegtp' \\(did you mean 'sharegpt'\\?\\)"
    ):
        read_sft(path, fmt="sharegtp")
    with pytest.raises(
        ConfigError, match="unknown SFT column key 'outputs' \\(did you mean 'output'\\?\\)"
    ):
        read_sft(path, columns={"outputs": "answer"})
    with pytest.raises(
        DataError,
        match=r"x\.txt: unsupported SFT file type '\.txt'; use one of \.json, \.jsonl, \.csv, \.parquet$",
    ):
        read_sft(tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"unsupported PT file type '\.parquet'"):
        read_pt_texts(tmp_path / "x.parquet")


def test_sharegpt_system_field_is_the_system_prompt(tmp_path: Path) -> None:
    turns = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    path = write(tmp_path, "s.jsonl", lines({"conversations": turns, "system": "Be brief."}))
    [conversation] = read_sft(path)
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "Be brief."),
        ("user", "Q"),
        ("assistant", "A"),
    ]
    first = [{"from": "system", "value": "S"}, *turns]
    path = write(tmp_path, "t.jsonl", lines({"conversations": first, "system": "ignored"}))
    assert read_sft(path)[0].messages[0] == Message("system", "S")


def test_sft_csv_and_parquet_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": ["Q1"], "output": ["A1"]}), tmp_path / "a.parquet")
    [conversation] = read_sft(tmp_path / "a.parquet")
    assert conversation.messages == (Message("user", "Q1"), Message("assistant", "A1"))
    assert conversation.source.endswith("a.parquet:row 1")
    path = write(tmp_path, "a.csv", 'instruction,input,output\nQ,"more\ninput",A\n')
    [conversation] = read_sft(path)
    assert conversation.messages[0] == Message("user", "Q\nmore\ninput")
    assert conversation.source.endswith("a.csv:2")
