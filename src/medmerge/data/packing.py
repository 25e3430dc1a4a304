"""Training examples: PT blocks, truncated or packed SFT rows, and the batch collator.

PT: each document gets `<|endoftext|>`, all are concatenated and cut into `cutoff_len`
blocks with labels = input_ids; the last, shorter block is kept (a small corpus still trains).

SFT truncation keeps the last reply whole when it fits: the reply is cut from the right only
to leave the prompt at least half of `cutoff_len`, and the prompt (with any earlier turns) is
cut from the left, so the question's end and the assistant header stay next to the reply.

SFT packing puts several examples in one row of at most `cutoff_len` tokens (first fit,
longest first) with `position_ids` restarting at 0 per example. For packed rows `collate`
returns a 4-D additive float32 `attention_mask` (batch, 1, L, L): 0 where a token may attend
(same example, not later), float32 min elsewhere. transformers passes a 4-D mask through
as-is, and an additive float mask is right for both sdpa and eager in any model dtype; a
boolean one would be silently wrong under eager. transformers' own detection of packing from
`position_ids` is not used: it is skipped whenever a cache exists, and `use_cache` defaults
to True even in training. The mask costs 4*L*L bytes per row. The first label of every
example is -100; the label shift never uses it, so packed and separate runs have equal loss.
"""

from __future__ import annotations

from typing import Any

import torch

from medmerge.data.readers import Conversation
from medmerge.data.templates import IGNORE_INDEX, get_template
from medmerge.errors import ConfigError

Example = dict[str, list[int]]


def _check_cutoff(cutoff_len: int) -> None:
    if cutoff_len < 2:
        raise ConfigError(f"cutoff_len must be at least 2, got {cutoff_len}")


def build_pt_examples(texts: list[str], tokenizer: Any, cutoff_len: int) -> list[Example]:
    """Concatenate documents, each ended by `<|endoftext|>`, into blocks of `cutoff_len`."""
    _check_cutoff(cutoff_len)
    end_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise ConfigError("the tokenizer has no '<|endoftext|>' token to end PT documents")
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += [*ids, end_id]
    blocks = [stream[start : start + cutoff_len] for start in range(0, len(stream), cutoff_len)]
    return [{"input_ids": block, "labels": list(block)} for block in blocks]


def response_start(labels: list[int]) -> int:
    """Index where the last trained run of labels (the last reply) begins."""
    end = len(labels)
    while end > 0 and labels[end - 1] == IGNORE_INDEX:
        end -= 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return start


def truncate(input_ids: list[int], labels: list[int], cutoff_len: int) -> Example:
    """Fit one example in `cutoff_len`: prompt cut from the left, last reply from the right."""
    if len(input_ids) <= cutoff_len:
        return {"input_ids": input_ids, "labels": labels}
    start = response_start(labels)
    reply_len = len(input_ids) - start
    keep_reply = min(reply_len, max(cutoff_len - start, cutoff_len // 2))
    keep_prompt = cutoff_len - keep_reply
    first = start - keep_prompt
    return {
        "input_ids": input_ids[first : start + keep_reply],
        "labels": labels[first : start + keep_reply],
    }


def build_sft_examples(
    conversations: list[Conversation],
    tokenizer: Any,
    template: str,
    enable_thinking: bool,
    cutoff_len: int,
    packing: bool,
) -> list[Example]:
    """Encode conversations with a named template, truncate each, and pack when asked."""
    _check_cutoff(cutoff_len)
    chat = get_template(template)
    examples = []
    for conversation in conversations:
        input_ids, labels = chat.encode(tokenizer, conversation, enable_thinking)
        example = truncate(input_ids, labels, cutoff_len)
        example["labels"][0] = IGNORE_INDEX
        if any(label != IGNORE_INDEX for label in example["labels"]):
            examples.append(example)
    return pack(examples, cutoff_len) if packing else examples


def pack(examples: list[Example], cutoff_len: int) -> list[Example]:
    """First-fit-decreasing packing into rows of <= cutoff_len with restarting position_ids."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        size = len(examples[index]["input_ids"])
        slot = next((r for r, free in enumerate(room) if free >= size), None)
        if slot is None:
            rows.append([])
            room.append(cutoff_len)
            slot = len(rows) - 1
        rows[slot].append(index)
        room[slot] -= size
    return [_join([examples[i] for i in row]) for row in rows]


def _join(parts: list[Example]) -> Example:
    row: Example = {"input_ids": [], "labels": [], "position_ids": []}
    for part in parts:
        row["input_ids"] += part["input_ids"]
        row["labels"] += part["labels"]
        row["position_ids"] += list(range(len(part["input_ids"])))
    return row


def collate(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; packed rows get position_ids and a 4-D block-causal mask."""
    width = max(len(example["input_ids"]) for example in examples)
    packed = any("position_ids" in example for example in examples)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    if packed:
        batch["position_ids"] = []
    for example in examples:
        size = len(example["input_ids"])
        pad = width - size
        batch["input_ids"].append(example["input_ids"] + [pad_token_id] * pad)
        batch["labels"].append(example["labels"] + [IGNORE_INDEX] * pad)
        batch["attention_mask"].append([1] * size + [0] * pad)
        if packed:
            # Padding forms its own segment (positions restart), so no real token sees it.
            positions = example.get("position_ids") or list(range(size))
            batch["position_ids"].append(positions + list(range(pad)))
    tensors = {key: torch.tensor(rows, dtype=torch.long) for key, rows in batch.items()}
    if packed:
        tensors["attention_mask"] = block_causal_mask(tensors["position_ids"])
    return tensors


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """Additive (batch, 1, L, L) float32 mask: attend within one example, never ahead."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    segment = starts.cumsum(dim=1)
    length = position_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal
    blocked = torch.tensor(torch.finfo(torch.float32).min)
    return torch.where(allowed, torch.tensor(0.0), blocked)[:, None]
