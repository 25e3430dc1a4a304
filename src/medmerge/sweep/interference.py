"""Interference diagnostics between two adapters' deltas, per module and layer.

For each base tensor both adapters change: ||dA||, ||dB|| (Frobenius; also relative to
||W||), their cosine <dA, dB> / (||dA|| ||dB||), and the overlap of their column spaces:
the cosines of the principal angles between span(dA) and span(dB) (singular values of
Qa^T Qb for orthonormal bases Qa, Qb), summarised as their mean square (0: orthogonal
subspaces, 1: one contains the other) and the largest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medmerge.architectures import GENERIC, Architecture
from medmerge.lora import Adapter, adapter_deltas


def column_basis(delta: torch.Tensor, rtol: float = 1e-8) -> torch.Tensor:
    """Orthonormal basis of the column space (left singular vectors above rtol * s_max)."""
    u, s, _ = torch.linalg.svd(delta, full_matrices=False)
    keep = s > rtol * (s[0] if s.numel() else 0)
    return u[:, keep]


def principal_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spaces of a and b, largest first."""
    qa, qb = column_basis(a), column_basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return torch.zeros(0, dtype=a.dtype)
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)


def tensor_interference(
    name: str,
    base: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    architecture: Architecture = GENERIC,
) -> dict[str, Any]:
    w = float(base.double().norm())
    na, nb = float(first.norm()), float(second.norm())
    cosines = principal_cosines(first, second)
    found = architecture.split(name)
    return {
        "tensor": name,
        "layer": found[0] if found else None,
        "module": found[1].removesuffix(".weight") if found else name,
        "norm_first": na,
        "norm_second": nb,
        "rel_first": na / w if w else None,
        "rel_second": nb / w if w else None,
        "cosine": float((first * second).sum() / (na * nb)) if na and nb else 0.0,
        "subspace_overlap": float((cosines**2).mean()) if cosines.numel() else 0.0,
        "max_principal_cosine": float(cosines[0]) if cosines.numel() else 0.0,
    }


def interference_table(
    model_state: dict[str, torch.Tensor],
    adapters: Sequence[Adapter],
    architecture: Architecture = GENERIC,
) -> list[dict[str, Any]]:
    """One row per base tensor both adapters change, in layer then module order; layers are
    found the way `architecture` names them (the generic fallback knows layers.N and h.N)."""
    if len(adapters) != 2:
        raise ValueError("interference compares exactly two adapters (PT and SFT)")
    rows = []
    for name in sorted(adapters[0].touched() & adapters[1].touched()):
        found = dict(adapter_deltas(name, adapters, model_state.get(name)))
        if 0 in found and 1 in found and found[0].dim() == 2:
            rows.append(
                tensor_interference(name, model_state[name], found[0], found[1], architecture)
            )
    return sorted(rows, key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["module"]))


def as_grid(
    rows: Sequence[dict[str, Any]], key: str
) -> tuple[list[list[float]], list[str], list[str]]:
    """(matrix, layer labels, module labels) of one metric for a heatmap."""
    layers = sorted({r["layer"] for r in rows if r["layer"] is not None})
    modules = list(dict.fromkeys(r["module"] for r in rows if r["layer"] is not None))
    lookup = {(r["layer"], r["module"]): r[key] for r in rows}
    matrix = [[float(lookup.get((layer, m)) or 0.0) for m in modules] for layer in layers]
    short = [m.split(".")[-1] for m in modules]
    return matrix, [f"layer {layer}" for layer in layers], short
