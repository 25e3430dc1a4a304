"""The offline Qwen3 tokenizer equals tiktoken on Qwen's own ranks, with Qwen3's added tokens."""

from __future__ import annotations

import unicodedata

import pytest

from helpers.qwen3_tokenizer import QWEN2_SPLIT, QWEN3_ADDED_TOKENS, ranks_file

SAMPLES = [
    "The patient presented with acute myocardial infarction (STEMI) at 03:45.",
    "Dosage: 2.5 mg/kg twice daily; don't exceed 10mg!\n\n  Indented line\tTab",
    "患者男性，45岁，主诉胸痛3天。诊断：急性冠脉综合征。",
    "混合 mixed 文本 with numbers 12345 and émojis 🙂🩺 and café",
    "   leading spaces\r\nwindows line\n\n\nthree newlines ",
    "def f(x):\n    return x ** 2  # comment",
]


@pytest.fixture(scope="module")
def tiktoken_qwen():
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    special = {text: token_id for token_id, text, _ in QWEN3_ADDED_TOKENS}
    return tiktoken.Encoding(
        "qwen3",
        pat_str=QWEN2_SPLIT,
        mergeable_ranks=load_tiktoken_bpe(str(ranks_file())),
        special_tokens=special,
    )


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_equal_tiktoken(qwen3_tokenizer, tiktoken_qwen, text):
    expected = tiktoken_qwen.encode(unicodedata.normalize("NFC", text), disallowed_special=())
    ids = qwen3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == expected
    assert qwen3_tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_added_tokens_have_qwen3_ids(qwen3_tokenizer, tiktoken_qwen):
    text = "<|im_start|>assistant\n<think>\nR\n</think>\n\nA<|im_end|>\n<|endoftext|>"
    ids = qwen3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == tiktoken_qwen.encode(text, allowed_special="all")
    assert ids[0] == 151644 and 151667 in ids and 151668 in ids and ids[-1] == 151643
    assert len(qwen3_tokenizer) == 151669
    assert qwen3_tokenizer.eos_token_id == 151645 and qwen3_tokenizer.pad_token_id == 151643
    # <think> is not special in Qwen3: it survives skip_special_tokens, the ChatML markers do not.
    assert (
        qwen3_tokenizer.decode(ids, skip_special_tokens=True)
        == "assistant\n<think>\nR\n</think>\n\nA\n"
    )
