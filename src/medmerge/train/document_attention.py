"""Attention within each packed document, without an (L, L) mask.

A packed SFT row holds several examples whose `position_ids` restart at 0. Under this
attention implementation ("medmerge_document", registered with transformers) the documents
are found from those positions and each one runs causal sdpa on its own tokens (torch's
flash kernel, no mask), so a row of 512 tokens costs the sum of its documents' squared
lengths instead of 512², and no 4-D float mask (4·L² bytes per row) is built. A batch whose
rows hold one document each (unpacked, right-padded) goes to transformers' sdpa unchanged.
Packed batches must then come from `collate(..., document_attention=True)`, whose rows carry
positions and a 2-D mask; under any other attention the block mask stays (packing.py).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "medmerge_document"


def document_spans(position_ids: torch.Tensor) -> list[list[tuple[int, int]]] | None:
    """Per row, the (start, end) of each run of consecutive positions; None when every row
    is one run (nothing packed)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    if not bool(starts[:, 1:].any()):
        return None
    width = position_ids.shape[1]
    spans = []
    for row in starts.tolist():
        cuts = [i for i, start in enumerate(row) if start] + [width]
        spans.append(list(itertools.pairwise(cuts)))
    return spans


def document_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal sdpa per document of each row (query (B, H, L, D)); output (B, L, H, D)."""
    positions = kwargs.get("position_ids")
    same_length = query.shape[2] == key.shape[2]  # no KV cache in front
    spans = document_spans(positions) if positions is not None and same_length else None
    if spans is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = []
    for row, row_spans in enumerate(spans):
        pieces = [
            torch.nn.functional.scaled_dot_product_attention(
                query[row : row + 1, :, start:end],
                key[row : row + 1, :, start:end],
                value[row : row + 1, :, start:end],
                dropout_p=dropout,
                scale=scaling,
                is_causal=True,
            )
            for start, end in row_spans
        ]
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, document_sdpa)
AttentionMaskInterface.register(NAME, sdpa_mask)  # used by rows of one document


@contextlib.contextmanager
def document_attention(model: Any, packed: bool) -> Iterator[bool]:
    """Inside, `model` (a transformers model, or a PEFT model around one) runs document
    attention when `packed` and it runs sdpa; yields whether it does. sdpa is put back after."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not packed or getattr(base.config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    base.set_attn_implementation(NAME)
    try:
        yield True
    finally:
        base.set_attn_implementation("sdpa")
