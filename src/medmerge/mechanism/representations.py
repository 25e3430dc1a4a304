"""Hidden states per layer, and the two views of them the study uses: linear CKA between
models and PCA of where the merged model's states move away from the SFT-only model's.

States are taken at the last prompt position (the one that predicts the first answer token),
for every layer: index 0 is the embedding output, index l the output of decoder layer l,
as transformers' `output_hidden_states` numbers them.

Linear CKA (Kornblith et al., 2019), on column-centred X (n x d1) and Y (n x d2):

    CKA(X, Y) = ||Yᵀ X||_F² / (||Xᵀ X||_F · ||Yᵀ Y||_F)

1 for the same states (or any rotation / isotropic scaling of them), near 0 for unrelated ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@torch.no_grad()
def last_token_states(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], batch_size: int = 8
) -> torch.Tensor:
    """[layers + 1, len(prompts), hidden] float64: each layer's state at the last prompt token."""
    if not prompts:
        raise ValueError("last_token_states needs at least one prompt")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunks = []
    for start in range(0, len(prompts), batch_size):
        rows = [
            tokenizer(p, add_special_tokens=False)["input_ids"]
            for p in prompts[start : start + batch_size]
        ]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])  # left padding
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=(mask.cumsum(1) - 1).clamp(min=0).to(device),
            output_hidden_states=True,
            use_cache=False,
        )
        chunks.append(torch.stack([h[:, -1].double().cpu() for h in out.hidden_states]))
    return torch.cat(chunks, dim=1)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two state matrices over the same n inputs (rows)."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"CKA needs the same n >= 2 rows, got {x.shape[0]} and {y.shape[0]}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(cross / norms) if norms > 0 else float("nan")


def cka_per_layer(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """CKA between two models' states ([layers + 1, n, d] each), layer by layer."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"states of different layouts: {tuple(a.shape)} vs {tuple(b.shape)}")
    return [linear_cka(a[layer], b[layer]) for layer in range(a.shape[0])]


@dataclass(frozen=True)
class ShiftPCA:
    """PCA of one layer's state shift (merged − reference) over the prompts."""

    explained: list[float]  # share of the shift's variance along each of the top directions
    directions: torch.Tensor  # [k, hidden], orthonormal rows, largest variance first
    mean_shift_norm: float  # ||mean(merged − reference)||: the part PCA centres away


def shift_pca(merged: torch.Tensor, reference: torch.Tensor, k: int) -> ShiftPCA:
    """The top-k principal directions of merged − reference ([n, hidden] each)."""
    shift = merged.double() - reference.double()
    centred = shift - shift.mean(0)
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    total = float(variance.sum())
    k = min(k, vh.shape[0])
    explained = [float(v / total) if total > 0 else 0.0 for v in variance[:k]]
    return ShiftPCA(explained, vh[:k].clone(), float(shift.mean(0).norm()))
