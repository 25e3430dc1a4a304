"""Merge methods: small pure functions of dense per-tensor deltas and weights, in one registry.

Every method acts on the dense delta s_i * B_i @ A_i of each adapter, never on A and B
separately (mixing factors creates cross terms B_i @ A_j that no adapter contains).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from medmerge.errors import MergeError, unknown_choice


@dataclass(frozen=True)
class MethodParams:
    """What the non-linear methods need besides deltas and weights."""

    density: float = 1.0  # fraction of each delta's entries kept
    seed: int = (
        0  # dare's random drop mask; combined with the tensor's position for reproducibility
    )


MergeMethod = Callable[[list[torch.Tensor], list[float], MethodParams], torch.Tensor]


def linear(deltas: list[torch.Tensor], weights: list[float], params: MethodParams) -> torch.Tensor:
    """sum_i w_i * delta_i: the exact weighted merge."""
    total = torch.zeros_like(deltas[0])
    for delta, weight in zip(deltas, weights, strict=True):
        total.add_(delta, alpha=weight)
    return total


def magnitude_prune(
    deltas: list[torch.Tensor], weights: list[float], params: MethodParams
) -> torch.Tensor:
    """Keep each delta's largest-magnitude `density` fraction, then sum with the weights."""
    return linear([keep_largest(d, params.density) for d in deltas], weights, params)


def dare_linear(
    deltas: list[torch.Tensor], weights: list[float], params: MethodParams
) -> torch.Tensor:
    """Drop entries at random (keep probability `density`), rescale by 1/density, sum."""
    return linear(_dare(deltas, params), weights, params)


def ties(deltas: list[torch.Tensor], weights: list[float], params: MethodParams) -> torch.Tensor:
    """Trim each delta to its top `density`, elect a sign per entry, average the agreeing ones."""
    trimmed = [keep_largest(d, params.density) for d in deltas]
    return _sign_elect_disjoint_mean(trimmed, weights)


def dare_ties(
    deltas: list[torch.Tensor], weights: list[float], params: MethodParams
) -> torch.Tensor:
    """DARE's random drop and rescale, then TIES's sign election and disjoint mean."""
    return _sign_elect_disjoint_mean(_dare(deltas, params), weights)


def keep_largest(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the `density` fraction of entries with the largest magnitude."""
    if density >= 1.0:
        return delta
    keep = round(density * delta.numel())
    if keep == 0:
        return torch.zeros_like(delta)
    threshold = delta.abs().flatten().kthvalue(delta.numel() - keep + 1).values
    return torch.where(delta.abs() >= threshold, delta, torch.zeros_like(delta))


def _dare(deltas: list[torch.Tensor], params: MethodParams) -> list[torch.Tensor]:
    if params.density >= 1.0:
        return deltas
    generator = torch.Generator().manual_seed(params.seed)
    kept = []
    for delta in deltas:
        mask = torch.rand(delta.shape, generator=generator, dtype=torch.float64) < params.density
        kept.append(torch.where(mask, delta / params.density, torch.zeros_like(delta)))
    return kept


def _sign_elect_disjoint_mean(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    weighted = torch.stack([d * w for d, w in zip(deltas, weights, strict=True)])
    sign = torch.sign(weighted.sum(dim=0))
    agrees = (torch.sign(weighted) == sign) & (weighted != 0)
    count = agrees.sum(dim=0).clamp(min=1)
    return (weighted * agrees).sum(dim=0) / count


METHODS: dict[str, MergeMethod] = {
    "linear": linear,
    "ties": ties,
    "dare_linear": dare_linear,
    "dare_ties": dare_ties,
    "magnitude_prune": magnitude_prune,
}


def get_method(name: str) -> MergeMethod:
    """The merge function called `name`; an unknown name is a MergeError with a suggestion."""
    if name not in METHODS:
        raise MergeError(unknown_choice("merge method", name, METHODS))
    return METHODS[name]
