"""PT blocks, SFT truncation and packing, the collator, and packed == separate on a tiny Qwen3."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from medmerge.data import (
    Conversation,
    Message,
    build_pt_examples,
    build_sft_examples,
    collate,
    infer_seqlen,
    pack,
    supervised_example,
)
from medmerge.errors import ConfigError

M = -100
IM_END_ID = 1021


def qa(question: str, answer: str) -> Conversation:
    return Conversation((Message("user", question), Message("assistant", answer)), "t:1")


CHATS = [
    qa("What is fever?", "A raised body temperature."),
    qa("And chills?", "Fever is a sign."),
    qa("What causes a cough in the patients with asthma?", "Inflammation of the airways."),
]


def test_pt_blocks_end_documents_with_the_templates_eos_and_drop_the_tail(tokenizer) -> None:
    one = tokenizer("Fever is a sign.", add_special_tokens=False).input_ids
    two = tokenizer("Be brief.", add_special_tokens=False).input_ids
    texts = ["Fever is a sign.", "Be brief."]
    for template, eos in (("qwen3", IM_END_ID), ("tokenizer", IM_END_ID), ("empty", IM_END_ID)):
        stream = [*one, eos, *two, eos]
        assert len(stream) == 15
        examples = build_pt_examples(texts, tokenizer, 6, template)
        assert [e["input_ids"] for e in examples] == [stream[:6], stream[6:12]]
        assert all(e["labels"] == e["input_ids"] for e in examples)
        kept = build_pt_examples(texts, tokenizer, 6, template, keep_remainder=True)
        assert [e["input_ids"] for e in kept] == [stream[:6], stream[6:12], stream[12:]]
    unpacked = build_pt_examples(texts, tokenizer, 6, "qwen3", packing=False)
    assert [e["input_ids"] for e in unpacked] == [[*one, IM_END_ID][:6], [*two, IM_END_ID][:6]]


@pytest.mark.parametrize(
    ("source", "target", "cutoff", "kept"),
    [
        (10, 3, 8, (5, 3)),  # reply under half: the prompt is cut
        (3, 10, 8, (3, 5)),  # prompt under half: the reply is cut
        (10, 10, 8, (4, 4)),  # both long: in proportion
        (6, 14, 8, (3, 5)),  # int(8 * 14 / 20) = 5
        (2, 2, 8, (2, 2)),
    ],
)
def test_infer_seqlen_is_llamafactorys(source, target, cutoff, kept) -> None:
    assert infer_seqlen(source, target, cutoff) == kept


def test_supervised_example_cuts_each_turn_from_the_right_and_drops_later_turns() -> None:
    pairs = [([1, 2, 3, 4, 5, 6], [7, 8]), ([9, 10], [11, 12])]
    assert supervised_example(pairs, None, None) == {
        "input_ids": [*range(1, 13)],
        "labels": [M] * 6 + [7, 8, M, M, 11, 12],
    }
    assert supervised_example(pairs, 6, None) == {
        "input_ids": [1, 2, 3, 4, 7, 8],
        "labels": [M] * 4 + [7, 8],
    }
    # efficient_eos: one EOS at the end (counted in the budget), later prompts start with it.
    assert supervised_example(pairs, None, 99) == {
        "input_ids": [*range(1, 13), 99],
        "labels": [M] * 6 + [7, 8, 99, M, 11, 12, 99],
    }


def test_pack_first_fit_longest_first() -> None:
    examples = [{"input_ids": [n] * n, "labels": [n] * n} for n in (3, 5, 2, 4)]
    rows = pack(examples, 8)
    assert [row["input_ids"] for row in rows] == [[5] * 5 + [3] * 3, [4] * 4 + [2] * 2]
    assert [row["position_ids"] for row in rows] == [
        [0, 1, 2, 3, 4, 0, 1, 2],
        [0, 1, 2, 3, 0, 1],
    ]


def test_build_sft_examples_truncates_and_packs(tokenizer) -> None:
    separate = build_sft_examples(CHATS, tokenizer, "qwen3", True, cutoff_len=64, packing=False)
    assert [len(e["input_ids"]) for e in separate] == [41, 33, 50]
    assert all(e["labels"][0] == M for e in separate)
    short = build_sft_examples(CHATS, tokenizer, "qwen3", True, cutoff_len=24, packing=False)
    assert [len(e["input_ids"]) for e in short] == [24, 24, 24]
    # LLaMA-Factory's infer_seqlen: the reply (22 of 41) is over half, the prompt (19) too,
    # so both are cut from the right in proportion: int(24 * 22 / 41) = 12 reply tokens.
    assert short[0]["input_ids"] == separate[0]["input_ids"][:12] + separate[0]["input_ids"][19:31]
    assert short[0]["labels"] == [M] * 12 + separate[0]["labels"][19:31]
    packed = build_sft_examples(CHATS, tokenizer, "qwen3", True, cutoff_len=80, packing=True)
    assert [row["position_ids"] for row in packed] == [[*range(50)], [*range(41), *range(33)]]
    assert packed[1]["input_ids"] == separate[0]["input_ids"] + separate[1]["input_ids"]
    assert packed[1]["labels"] == separate[0]["labels"] + separate[1]["labels"]
    with pytest.raises(ConfigError, match="cutoff_len must be at least 2, got 1"):
        build_sft_examples(CHATS, tokenizer, "qwen3", True, cutoff_len=1, packing=False)


def test_collate_pads_right() -> None:
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [M, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0
    )
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[M, 6, 7], [8, M, M]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collate_packed_rows_restart_positions_in_padding() -> None:
    rows = [
        {"input_ids": [1, 2, 3, 4], "labels": [M, 2, M, 4], "position_ids": [0, 1, 0, 1]},
        {"input_ids": [5, 6], "labels": [M, 6], "position_ids": [0, 1]},
    ]
    batch = collate(rows, 0)
    assert set(batch) == {"input_ids", "labels", "position_ids", "attention_mask"}
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 0, 1]]
    assert batch["labels"].tolist() == [[M, 2, M, 4], [M, 6, M, M]]
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 4, 4)
    assert mask.dtype == torch.float32
    allowed = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    assert (mask == 0).int()[:, 0].tolist() == [allowed, allowed]
    assert mask.min().item() == torch.finfo(torch.float32).min


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross entropy with the causal shift; 0 where the label is -100."""
    shifted = torch.nn.functional.pad(labels, (0, 1), value=M)[..., 1:]
    return torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), shifted, ignore_index=M, reduction="none"
    )


@pytest.fixture(scope="module")
def sft_examples(tokenizer):
    return build_sft_examples(CHATS, tokenizer, "qwen3", False, cutoff_len=64, packing=False)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "medmerge_document"])
def test_packed_row_equals_separate_runs(tokenizer, sft_examples, attention: str) -> None:
    import medmerge.train.document_attention  # noqa: F401  registers medmerge_document

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        attn_implementation=attention,
    )
    model = Qwen3ForCausalLM(config).eval()
    rows = pack(sft_examples, 200)
    short = pack(sft_examples[:1], 200)
    assert len(rows) == 1
    per_document = attention == "medmerge_document"
    batch = collate([rows[0], short[0]], tokenizer.pad_token_id, document_attention=per_document)
    assert batch["attention_mask"].dim() == (2 if per_document else 4)
    width = len(rows[0]["input_ids"])
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        losses = token_losses(logits, batch["labels"])
    if per_document:  # the two rows joined into one of their real tokens, no padding
        assert batch["input_ids"].shape == (1, width + len(short[0]["input_ids"]))
        assert batch["attention_mask"].all()
        packed = [logits[0, :width], logits[0, width:]]
        packed_loss = losses[:, :width]
    else:
        packed, packed_loss = logits, losses
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in sft_examples]
        alone_loss = [
            token_losses(a[None], torch.tensor([e["labels"]]))[0]
            for a, e in zip(alone, sft_examples, strict=True)
        ]
        plain = model(input_ids=batch["input_ids"][:1]).logits[0]
    order = sorted(range(3), key=lambda i: -len(sft_examples[i]["input_ids"]))
    start = 0
    for index in order:
        size = len(sft_examples[index]["input_ids"])
        torch.testing.assert_close(packed[0][start : start + size], alone[index], atol=1e-5, rtol=0)
        start += size
    torch.testing.assert_close(packed[1][: len(alone[0])], alone[0], atol=1e-5, rtol=0)
    total = sum(loss.sum() for loss in alone_loss)
    assert abs(packed_loss[0].sum().item() - total.item()) < 1e-5 * len(batch["labels"][0])
    assert packed_loss[0].sum().item() > 0
    # Control: without restarting positions the later examples see the earlier ones.
    second = order[1]
    first_size = len(sft_examples[order[0]]["input_ids"])
    span = plain[first_size : first_size + len(sft_examples[second]["input_ids"])]
    assert (span - alone[second]).abs().max().item() > 1e-3
