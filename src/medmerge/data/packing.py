"""Training examples: PT blocks, truncated or packed SFT rows, and the batch collator.

PT is LLaMA-Factory's pretrain stage: each document gets the EOS its template implies (qwen3:
`<|im_end|>`), and they are concatenated and cut into `cutoff_len` blocks with labels =
input_ids, the short remainder dropped (`keep_remainder` keeps it); without packing, one
document per row, truncated.

SFT truncation is LLaMA-Factory's: turns in order, each (prompt, reply) pair cut from the
right by infer_seqlen to the room left, later turns dropped once cutoff_len is used.

SFT packing puts several examples in one row of at most `cutoff_len` tokens (first fit,
longest first) with `position_ids` restarting at 0 per example. Training runs packed rows
under document attention (train/document_attention.py): each example attends to itself
only, found from the restarting positions, with no (L, L) mask; `collate(...,
document_attention=True)` then joins a batch's rows into one row of their real tokens (as
varlen attention takes them: no position is spent on padding). Otherwise (a model
not on sdpa) `collate` returns a 4-D additive float32 `attention_mask` (batch, 1, L, L): 0
where a token may attend (same example, not later), float32 min elsewhere. transformers
passes a 4-D mask through as-is, and an additive float mask is right for both sdpa and eager
in any model dtype; a boolean one would be silently wrong under eager. transformers' own
detection of packing from `position_ids` is not used: it is skipped whenever a cache exists,
and `use_cache` defaults to True even in training. The mask costs 4*L*L bytes per row. The
first label of every example is -100; the label shift never uses it, so packed and separate
runs have equal loss.
"""

from __future__ import annotations

from typing import Any

import torch

from medmerge.data.chat_slots import Pairs, SlotTemplate, tokenize
from medmerge.data.readers import Conversation
from medmerge.data.templates import IGNORE_INDEX, ChatTemplate, get_template
from medmerge.errors import ConfigError

Example = dict[str, list[int]]


def _check_cutoff(cutoff_len: int) -> None:
    if cutoff_len < 2:
        raise ConfigError(f"cutoff_len must be at least 2, got {cutoff_len}")


def pt_eos_token(tokenizer: Any, template: str | None) -> str:
    """The EOS LLaMA-Factory's pretrain stage appends: `<|end_of_text|>` for llama3, else the
    tokenizer's eos after the template's fix (its first stop word for replace_eos templates)."""
    if template == "llama3":
        return "<|end_of_text|>"
    if template is not None:
        chat = get_template(template)
        if isinstance(chat, SlotTemplate):
            return chat.eos_token(tokenizer)
    return tokenizer.eos_token or "<|endoftext|>"


def build_pt_examples(
    texts: list[str],
    tokenizer: Any,
    cutoff_len: int,
    template: str | None = None,
    packing: bool = True,
    keep_remainder: bool = False,
) -> list[Example]:
    """LLaMA-Factory's pretrain processor: each document + EOS (as text, tokenized with it);
    packed: concatenated and cut into `cutoff_len` blocks, the short remainder dropped unless
    `keep_remainder`; unpacked: one row per document, truncated to `cutoff_len`. A tokenizer
    with `add_bos_token` gets BOS first in every row, as in LLaMA-Factory."""
    _check_cutoff(cutoff_len)
    eos = pt_eos_token(tokenizer, template)
    end_id = tokenizer.convert_tokens_to_ids(eos)
    if end_id is None or end_id == tokenizer.unk_token_id:
        raise ConfigError(
            f"the tokenizer has no {eos!r} token to end PT documents with (template "
            f"{template}); pick the template of the model's family"
        )
    add_bos = (
        bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None
    )
    documents = [text + eos for text in texts]
    if not packing:
        if add_bos:
            documents = [tokenizer.bos_token + text for text in documents]
        rows = [
            ids[:cutoff_len] for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]
        ]
    else:
        stream = [
            i for ids in tokenizer(documents, add_special_tokens=False)["input_ids"] for i in ids
        ]
        end = len(stream) if keep_remainder else len(stream) // cutoff_len * cutoff_len
        rows = [stream[start : start + cutoff_len] for start in range(0, end, cutoff_len)]
        if add_bos:
            rows = [[tokenizer.bos_token_id, *row[1:]] for row in rows]
    return [{"input_ids": row, "labels": list(row)} for row in rows]


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's infer_seqlen: kept lengths of one (prompt, reply) pair in `cutoff_len`."""
    if target_len * 2 < cutoff_len:  # the reply fits in half: cut the prompt
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # the prompt fits in half: cut the reply
        max_target_len = cutoff_len - source_len
    else:  # cut both in proportion
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def supervised_example(pairs: Pairs, cutoff_len: int | None, eos_id: int | None) -> Example:
    """LLaMA-Factory's supervised processor: pairs in order, each cut by infer_seqlen to the
    room left, prompts masked; stops once `cutoff_len` is used. Both ends keep their start
    (prompt and reply are cut from the right). `eos_id` (efficient_eos templates) is added at
    the end, and later prompts' first label is it."""
    input_ids: list[int] = []
    labels: list[int] = []
    total = 1 if eos_id is not None else 0
    for turn, (source, target) in enumerate(pairs):
        if cutoff_len is not None:
            if total >= cutoff_len:
                break
            source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - total)
            source, target = source[:source_len], target[:target_len]
            total += source_len + target_len
        source_labels = [IGNORE_INDEX] * len(source)
        if eos_id is not None and turn != 0 and source:
            source_labels[0] = eos_id
        input_ids += source + target
        labels += source_labels + target
    if eos_id is not None:
        input_ids.append(eos_id)
        labels.append(eos_id)
    return {"input_ids": input_ids, "labels": labels}


def mask_turn_end_newline(pairs: Pairs, template: ChatTemplate, tokenizer: Any) -> Pairs:
    """Move a reply's last token into the next prompt when it is the "\n" after a stop word
    (ChatML's `<|im_end|>\n`), so that it is not trained; LLaMA-Factory trains it."""
    newline = tokenize(tokenizer, "\n")
    stops = set(template.stop_token_ids(tokenizer))
    moved: Pairs = []
    carry: list[int] = []
    for source, target in pairs:
        source = carry + source
        carry = []
        if len(target) >= 2 and target[-1:] == newline and target[-2] in stops:
            target, carry = target[:-1], newline
        moved.append((source, target))
    return [*moved, (carry, [])] if carry else moved


def build_sft_examples(
    conversations: list[Conversation],
    tokenizer: Any,
    template: str,
    enable_thinking: bool,
    cutoff_len: int,
    packing: bool,
    mask_newline: bool = False,
) -> list[Example]:
    """Encode conversations with a named template, truncate each as LLaMA-Factory does, and
    pack when asked; examples left with no trained token are dropped."""
    _check_cutoff(cutoff_len)
    chat = get_template(template)
    examples = []
    for conversation in conversations:
        pairs = chat.encode_pairs(tokenizer, conversation, enable_thinking)
        if mask_newline:
            pairs = mask_turn_end_newline(pairs, chat, tokenizer)
        example = supervised_example(pairs, cutoff_len, chat.efficient_eos_id(tokenizer))
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


def collate(
    examples: list[Example], pad_token_id: int, document_attention: bool = False
) -> dict[str, torch.Tensor]:
    """Right-pad a batch; packed rows get position_ids, and a 4-D block-causal mask unless
    the model runs document attention: then the rows are joined into one row of their real
    tokens (no padding to run; the positions still restart per example)."""
    packed = any("position_ids" in example for example in examples)
    if packed and document_attention:
        return _flattened(examples)
    width = max(len(example["input_ids"]) for example in examples)
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
    if packed and not document_attention:
        tensors["attention_mask"] = block_causal_mask(tensors["position_ids"])
    return tensors


def _flattened(rows: list[Example]) -> dict[str, torch.Tensor]:
    """Packed rows as one (1, total) row. Every example's first label is -100, so the label
    shift never reaches across a row's end into the next row's first example."""
    keys = ("input_ids", "labels", "position_ids")
    joined = {key: [x for row in rows for x in row[key]] for key in keys}
    joined["attention_mask"] = [1] * len(joined["input_ids"])
    return {key: torch.tensor([values], dtype=torch.long) for key, values in joined.items()}


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
