"""medmerge's encodings equal LLaMA-Factory 0.9.5's own, read from the committed goldens.

tests/goldens/llamafactory/*.json were written by scripts/goldens/llamafactory_templates.py
running LLaMA-Factory's supervised and pretrain processors and encode_oneturn on the
conversations of conversations.json, per tokenizer and template setting.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest

from medmerge.data import Conversation, Message, get_template
from medmerge.data.packing import build_sft_examples, supervised_example

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "llamafactory"
PROJECT_TOKENIZERS = ("project", "project_llama3", "project_gemma", "project_phi")
QWEN3_TOKENIZERS = ("qwen3", "qwen3_base")


@cache
def golden(name: str) -> dict:
    return json.loads((GOLDENS / f"{name}.json").read_text(encoding="utf-8"))


@cache
def inputs() -> dict[str, dict]:
    data = json.loads((GOLDENS / "conversations.json").read_text(encoding="utf-8"))
    return {c["id"]: c for c in data["conversations"]}


def conversation(record: dict, drop_last: bool = False) -> Conversation:
    system = [Message("system", record["system"])] if record["system"] else []
    turns = [Message(role, text) for role, text in record["messages"]]
    return Conversation(tuple(system + (turns[:-1] if drop_last else turns)), record["id"])


def setting(key: str) -> tuple[str, bool]:
    name, _, mode = key.partition(":")
    return name, mode != "nothink"


@cache
def _project_tokenizer(name: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(GOLDENS / "tokenizers" / name)


@pytest.fixture(scope="module")
def tokenizers(request):
    """Every golden tokenizer by name; the Qwen3 ones from the session fixture's folder."""
    from transformers import AutoTokenizer

    folder = request.getfixturevalue("qwen3_tokenizer_dir")
    found = {name: _project_tokenizer(name) for name in PROJECT_TOKENIZERS}
    found["qwen3"] = request.getfixturevalue("qwen3_tokenizer")
    found["qwen3_base"] = AutoTokenizer.from_pretrained(folder, eos_token="<|endoftext|>")
    return found


def _cases():
    for name in (*PROJECT_TOKENIZERS, *QWEN3_TOKENIZERS):
        for key in golden(name)["sft"]:
            yield pytest.param(name, key, id=f"{name}-{key}")


@pytest.mark.parametrize(("tokenizer_name", "key"), list(_cases()))
def test_supervised_and_prompt_ids_equal_llamafactory(tokenizers, tokenizer_name, key):
    tokenizer = tokenizers[tokenizer_name]
    template_name, thinking = setting(key)
    chat = get_template(template_name)
    eos_id = chat.efficient_eos_id(tokenizer)
    mismatches = []
    for conv_id, expected in golden(tokenizer_name)["sft"][key].items():
        record = inputs()[conv_id]
        pairs = chat.encode_pairs(tokenizer, conversation(record), thinking)
        for cutoff in golden(tokenizer_name)["cutoffs"]:
            example = supervised_example(pairs, cutoff, eos_id)
            if [example["input_ids"], example["labels"]] != expected[str(cutoff)]:
                mismatches.append(f"{conv_id}@{cutoff}")
        prompt = conversation(record, drop_last=True).messages
        if chat.prompt_ids(tokenizer, prompt, thinking) != expected["prompt"]:
            mismatches.append(f"{conv_id} prompt ids")
        text = tokenizer.decode(expected["prompt"], skip_special_tokens=False)
        if chat.render_prompt(tokenizer, prompt, thinking) != text:
            mismatches.append(f"{conv_id} prompt text")
    assert not mismatches


def test_training_examples_are_the_goldens_with_the_first_label_masked(tokenizers):
    """build_sft_examples = the processor's rows (the first label is never used by the shift)."""
    record = inputs()["long_history"]
    for cutoff in (4096, 24):
        [example] = build_sft_examples(
            [conversation(record)], tokenizers["qwen3"], "qwen3", False, cutoff, packing=False
        )
        ids, labels = golden("qwen3")["sft"]["qwen3:nothink"]["long_history"][str(cutoff)]
        assert example == {"input_ids": ids, "labels": [-100, *labels[1:]]}


def test_goldens_cover_every_template_of_the_issue():
    covered = {
        key for name in (*PROJECT_TOKENIZERS, *QWEN3_TOKENIZERS) for key in golden(name)["sft"]
    }
    wanted = {"qwen3:think", "qwen3:nothink", "qwen3_nothink", "qwen", "chatml", "default"}
    wanted |= {"empty", "llama3", "mistral", "gemma", "gemma2", "gemma3", "phi", "phi_small"}
    wanted |= {"phi4", "phi4_mini"}
    assert wanted <= covered
    assert set(golden("qwen3")["sft"]) >= {"qwen3:think", "qwen3:nothink", "qwen", "chatml"}


def _pt_cases():
    for name in (*PROJECT_TOKENIZERS, *QWEN3_TOKENIZERS):
        for template in golden(name)["pt"]:
            yield pytest.param(name, template, id=f"{name}-{template}")


@pytest.mark.parametrize(("tokenizer_name", "template"), list(_pt_cases()))
def test_pt_rows_equal_llamafactory(tokenizers, tokenizer_name, template):
    from medmerge.data import build_pt_examples

    documents = json.loads((GOLDENS / "conversations.json").read_text("utf-8"))["documents"]
    expected = golden(tokenizer_name)["pt"][template]
    cutoff = golden(tokenizer_name)["pt_cutoff"]
    tokenizer = tokenizers[tokenizer_name]
    for packing, key in ((True, "packed"), (False, "unpacked")):
        rows = build_pt_examples(documents, tokenizer, cutoff, template, packing)
        assert [row["input_ids"] for row in rows] == expected[key], key
        assert all(row["labels"] == row["input_ids"] for row in rows)
    kept = build_pt_examples(documents, tokenizer, cutoff, template, True, keep_remainder=True)
    assert [row["input_ids"] for row in kept[:-1]] == expected["packed"]
    assert 0 < len(kept[-1]["input_ids"]) < cutoff


def test_mask_turn_end_newline_masks_only_that_newline(tokenizers):
    tokenizer = tokenizers["qwen3"]
    record = inputs()["en_multi"]
    [plain] = build_sft_examples([conversation(record)], tokenizer, "qwen3", True, 4096, False)
    [masked] = build_sft_examples(
        [conversation(record)], tokenizer, "qwen3", True, 4096, False, mask_newline=True
    )
    assert masked["input_ids"] == plain["input_ids"]
    changed = [
        i for i, (a, b) in enumerate(zip(plain["labels"], masked["labels"], strict=True)) if a != b
    ]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(changed) == 2
    assert all(plain["input_ids"][i - 1] == im_end and masked["labels"][i] == -100 for i in changed)
