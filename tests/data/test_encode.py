"""`medmerge encode` writes LLaMA-Factory's rows for a data file, one JSON line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_one_error
from medmerge.cli import main

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "llamafactory"
PROJECT = GOLDENS / "tokenizers" / "project"


def sharegpt_file(tmp_path: Path) -> tuple[Path, list[dict]]:
    """The golden conversations as a ShareGPT JSON-lines file (system as a first turn)."""
    records = json.loads((GOLDENS / "conversations.json").read_text("utf-8"))["conversations"]
    lines = []
    for record in records:
        turns = [{"from": "system", "value": record["system"]}] if record["system"] else []
        turns += [
            {"from": "human" if role == "user" else "gpt", "value": text}
            for role, text in record["messages"]
        ]
        lines.append(json.dumps({"conversations": turns}, ensure_ascii=False))
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, records


@pytest.mark.parametrize(
    ("template", "thinking", "key"),
    [
        ("qwen3", "--no-enable-thinking", "qwen3:nothink"),
        ("qwen3", "--enable-thinking", "qwen3:think"),
        ("default", "--enable-thinking", "default"),
        ("mistral", "--enable-thinking", "mistral"),
    ],
)
def test_encode_sft_equals_llamafactory(tmp_path, capsys, template, thinking, key):
    data, records = sharegpt_file(tmp_path)
    golden = json.loads((GOLDENS / "project.json").read_text("utf-8"))["sft"][key]
    out = tmp_path / "rows.jsonl"
    argv = ["encode", "--tokenizer", str(PROJECT), "--template", template, thinking]
    code = main([*argv, "--data", str(data), "--cutoff-len", "24", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert [row["input_ids"], row["labels"]] == golden[record["id"]]["24"], record["id"]
        assert row["source"].endswith(f"chats.jsonl:{records.index(record) + 1}")
    assert f"{out}: {len(rows)} examples" in capsys.readouterr().out


def test_encode_marks_trained_spans(tmp_path):
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "What is fever?", "output": "Heat."}]), "utf-8")
    out = tmp_path / "rows.jsonl"
    argv = ["encode", "--tokenizer", str(PROJECT), "--template", "qwen3", "--data", str(data)]
    assert main([*argv, "--out", str(out)]) == 0
    [row] = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert row["text"] == (
        "<|im_start|>user\nWhat is fever?<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n\n</think>\n\nHeat.<|im_end|>\n"
    )
    assert row["marked"] == (
        "<|im_start|>user\nWhat is fever?<|im_end|>\n<|im_start|>assistant\n"
        "⟦<think>\n\n</think>\n\nHeat.<|im_end|>\n⟧"
    )


def test_encode_pt_blocks_equal_llamafactory(tmp_path):
    documents = json.loads((GOLDENS / "conversations.json").read_text("utf-8"))["documents"]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents), "utf-8")
    out = tmp_path / "blocks.jsonl"
    argv = ["encode", "--tokenizer", str(PROJECT), "--stage", "pt", "--data", str(data)]
    assert main([*argv, "--cutoff-len", "16", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    expected = json.loads((GOLDENS / "project.json").read_text("utf-8"))["pt"]["qwen3"]["packed"]
    assert [row["input_ids"] for row in rows] == expected
    assert all(row["marked"] == f"⟦{row['text']}⟧" for row in rows)


def test_encode_refuses_to_overwrite_without_force(tmp_path, capsys):
    data = tmp_path / "one.json"
    data.write_text(json.dumps([{"instruction": "Q", "output": "A"}]), "utf-8")
    out = tmp_path / "rows.jsonl"
    out.write_text("keep me\n", "utf-8")
    argv = ["encode", "--tokenizer", str(PROJECT), "--data", str(data), "--out", str(out)]
    assert_one_error(main(argv), capsys.readouterr().err, "output file exists", "--force")
    assert out.read_text("utf-8") == "keep me\n"
    assert main([*argv, "--force"]) == 0
    assert out.read_text("utf-8").startswith('{"source"')
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medmerge-tmp-")]


def test_encode_reads_a_llamafactory_dataset_folder(tmp_path):
    folder = Path(__file__).parent / "llamafactory_data"
    out = tmp_path / "rows.jsonl"
    argv = ["encode", "--tokenizer", str(PROJECT), "--template", "qwen3_nothink"]
    argv += ["--dataset", "identity,alpaca_zh_demo", "--dataset-dir", str(folder)]
    assert main([*argv, "--max-samples", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [Path(row["source"]).name for row in rows] == [
        "identity.json:2",
        "identity.json:7",
        "alpaca_zh_demo.json:2",
        "alpaca_zh_demo.json:7",
    ]
    assert rows[0]["marked"].endswith(
        "⟦Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?<|im_end|>\n⟧"
    )
