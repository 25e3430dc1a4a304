"""Log-likelihood scoring with one packed row per question and logits only where scored.

A question's options share its context: the row holds the shared prefix once, then each
option's tokens (but its last) one after another, with positions restarting after the
prefix for every option and a mask that lets an option see the prefix and itself only. So
each token runs once, rows carry no option padding, and the output layer and log-softmax
run only at the positions whose next token is scored (the prefix's last position once, for
every option). The sums equal scoring each context + continuation whole
(tests/eval/test_backends_speedpaths.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class PrefixGroup:
    """Requests scored over one shared token prefix: a question's options."""

    prefix: list[int]
    indices: list[int] = field(default_factory=list)  # positions in the request list
    sequences: list[list[int]] = field(default_factory=list)  # context + continuation ids
    n_continuation: list[int] = field(default_factory=list)

    def suffix(self, member: int) -> list[int]:
        """The member's tokens after the prefix that are inputs (its last token is not)."""
        return self.sequences[member][len(self.prefix) : -1]

    def row_length(self) -> int:
        return len(self.prefix) + sum(len(self.suffix(k)) for k in range(len(self.indices)))


def group_by_prefix(
    encoded: Sequence[tuple[list[int], int]], contexts: Sequence[str]
) -> list[PrefixGroup]:
    """Group requests by context; the prefix is their common context tokens (>= 1 token)."""
    by_context: dict[str, list[int]] = {}
    for index, context in enumerate(contexts):
        by_context.setdefault(context, []).append(index)
    groups = []
    for indices in by_context.values():
        sequences = [encoded[i][0] for i in indices]
        shared = min(len(ids) - encoded[i][1] for ids, i in zip(sequences, indices, strict=True))
        first = sequences[0]
        while shared and any(ids[:shared] != first[:shared] for ids in sequences):
            shared -= 1  # a tokenizer merged context and continuation differently
        parts = [indices] if shared else [[i] for i in indices]
        for part in parts:
            n = shared or len(encoded[part[0]][0]) - encoded[part[0]][1]
            group = PrefixGroup(encoded[part[0]][0][:n])
            for i in part:
                group.indices.append(i)
                group.sequences.append(encoded[i][0])
                group.n_continuation.append(encoded[i][1])
            groups.append(group)
    return groups


@dataclass
class PackedRow:
    """One question's row: its ids, positions, option of each token (0 = the prefix), and
    per member the row positions whose next-token log-probs are summed."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    option: list[int] = field(default_factory=list)
    scored: list[list[int]] = field(default_factory=list)


def packed_row(group: PrefixGroup) -> PackedRow:
    """The prefix once, then each member's suffix with positions restarting after it."""
    n_prefix = len(group.prefix)
    row = PackedRow(list(group.prefix), list(range(n_prefix)), [0] * n_prefix)
    for member in range(len(group.indices)):
        suffix = group.suffix(member)
        start = len(row.ids)
        row.ids += suffix
        row.positions += range(n_prefix, n_prefix + len(suffix))
        row.option += [member + 1] * len(suffix)
        steps = [n_prefix - 1, *range(start, start + len(suffix))]  # step j predicts token j
        row.scored.append(steps[-group.n_continuation[member] :])
    return row


def batch_inputs(rows: Sequence[PackedRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and positions, and the (batch, L, L) boolean mask of allowed keys:
    earlier or equal positions of the prefix or of the query's own option."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    option = torch.full((len(rows), width), -1, dtype=torch.long)  # padding: its own option
    for index, row in enumerate(rows):
        n = len(row.ids)
        ids[index, :n] = torch.tensor(row.ids, dtype=torch.long)
        positions[index, :n] = torch.tensor(row.positions, dtype=torch.long)
        option[index, :n] = torch.tensor(row.option, dtype=torch.long)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = (option[:, None, :] == 0) | (option[:, None, :] == option[:, :, None])
    return {"input_ids": ids, "position_ids": positions, "allowed": visible & causal}


def attention_mask_for(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """The 4-D mask transformers passes through as is: boolean for sdpa, additive in the
    model's dtype for eager (which adds the mask to the scores)."""
    if getattr(model.config, "_attn_implementation", "sdpa") == "sdpa":
        return allowed[:, None]
    blocked = torch.finfo(model.dtype).min
    return torch.zeros(allowed.shape, dtype=model.dtype).masked_fill(~allowed, blocked)[:, None]


def scored_logits(model: Any, inputs: dict[str, torch.Tensor], flat: torch.Tensor) -> torch.Tensor:
    """Logits (n, vocab) at the flat row positions `flat` only: the output layer's input is cut
    to those positions by a pre-hook, so whatever the model does after it (soft-capping,
    scaling) still applies, and no full-vocabulary logits are made elsewhere."""
    device = model.device

    def keep_scored(_module: torch.nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1])[flat.to(hidden.device)][None], *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(keep_scored)
    try:
        out = model(
            input_ids=inputs["input_ids"].to(device),
            position_ids=inputs["position_ids"].to(device),
            attention_mask=attention_mask_for(model, inputs["allowed"]).to(device),
            use_cache=False,
        )
    finally:
        handle.remove()
    return out.logits[0]


@dataclass
class PackedBatch:
    """The groups' packed rows as model inputs, the flat row positions whose logits are made
    (each once, in order), and per request its positions in that order and its target ids."""

    inputs: dict[str, torch.Tensor]
    flat: torch.Tensor
    requests: list[tuple[int, torch.Tensor, torch.Tensor]]  # (request index, picked, targets)


def packed_batch(groups: Sequence[PrefixGroup], pad_id: int) -> PackedBatch:
    rows = [packed_row(g) for g in groups]
    inputs = batch_inputs(rows, pad_id)
    width = inputs["input_ids"].shape[1]
    flat = sorted({r * width + p for r, row in enumerate(rows) for s in row.scored for p in s})
    where = {position: k for k, position in enumerate(flat)}
    requests = []
    for r, (group, row) in enumerate(zip(groups, rows, strict=True)):
        for member, steps in enumerate(row.scored):
            picked = torch.tensor([where[r * width + p] for p in steps])
            targets = torch.tensor(group.sequences[member][-len(steps) :])
            requests.append((group.indices[member], picked, targets))
    return PackedBatch(inputs, torch.tensor(flat), requests)


def score_packed(
    model: Any, groups: Sequence[PrefixGroup], pad_id: int, results: list[float]
) -> None:
    """One forward over the groups' packed rows; each request's sum into `results`."""
    batch = packed_batch(groups, pad_id)
    logprobs = torch.log_softmax(scored_logits(model, batch.inputs, batch.flat).float(), -1)
    logprobs = logprobs.cpu()
    for index, picked, targets in batch.requests:
        results[index] = float(logprobs[picked, targets].double().sum())
