"""Merge methods: small pure functions of dense per-tensor deltas and weights, in one registry.

Every method acts on the dense delta s_i * B_i @ A_i of each adapter, never on A and B
separately (mixing factors creates cross terms B_i @ A_j that no adapter contains).
Each registry entry carries what the rest of the code asks of a method: the parameters it
takes, whether its result is low-rank-exact, and how verify recomputes it. Adding a method
is a function and one `METHODS` entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from medmerge.errors import MergeError, unknown_choice


@dataclass(frozen=True)
class MethodParams:
    """What the non-linear methods need besides deltas and weights."""

    density: float = 1.0  # fraction of each delta's entries kept
    seed: int = (
        0  # dare's random drop mask; combined with the tensor's position for reproducibility
    )


Combine = Callable[[list[torch.Tensor], list[float], MethodParams], torch.Tensor]


@dataclass(frozen=True)
class MergeMethod:
    """A merge method and the properties merge, verify and the backends read from it.

    `parameters`: the MethodParams fields it uses (any other one set is a config error).
    `low_rank_exact`: the merged delta is sum_i w_i d_i, so stacked factors carry it exactly
    (a merged adapter, vLLM serving, the factor path of merge and verify, weight recovery).
    `recompute`: how verify rebuilds the intended tensor: "factors" (stacked LoRA factors, a
    block of rows at a time) or "dense" (each adapter's dense delta through `combine`).
    """

    name: str
    combine: Combine
    parameters: tuple[str, ...] = ()
    low_rank_exact: bool = False
    recompute: Literal["factors", "dense"] = "dense"

    def __call__(
        self, deltas: list[torch.Tensor], weights: list[float], params: MethodParams
    ) -> torch.Tensor:
        return self.combine(deltas, weights, params)


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
    method.name: method
    for method in (
        MergeMethod("linear", linear, low_rank_exact=True, recompute="factors"),
        MergeMethod("ties", ties, parameters=("density",)),
        MergeMethod("dare_linear", dare_linear, parameters=("density", "seed")),
        MergeMethod("dare_ties", dare_ties, parameters=("density", "seed")),
        MergeMethod("magnitude_prune", magnitude_prune, parameters=("density",)),
    )
}


def get_method(name: str) -> MergeMethod:
    """The merge method called `name`; an unknown name is a MergeError with a suggestion."""
    if name not in METHODS:
        raise MergeError(unknown_choice("merge method", name, METHODS))
    return METHODS[name]


def methods_with(**properties: object) -> list[str]:
    """Names of the methods whose properties equal `properties`, e.g. low_rank_exact=True."""
    return [
        name
        for name, method in METHODS.items()
        if all(getattr(method, key) == value for key, value in properties.items())
    ]
