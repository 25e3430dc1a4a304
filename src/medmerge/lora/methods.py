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
    owners: tuple[int, ...] = ()  # the adapter index of each delta of this tensor
    adapters: int = 0  # how many adapters the merge has (the last one is protected by
    # subspace_orthogonal)


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
    """Drop entries at random (keep probability `density`), rescale to the delta's L1 norm, sum."""
    return linear(_dare(deltas, params), weights, params)


def ties(deltas: list[torch.Tensor], weights: list[float], params: MethodParams) -> torch.Tensor:
    """Trim each delta to its top `density`, elect a sign per entry by weighted mass, and take
    the disjoint mean: the agreeing weighted deltas over the sum of their weights (mergekit)."""
    trimmed = [keep_largest(d, params.density) for d in deltas]
    return _sign_elect(trimmed, weights, normalise=True)


def dare_ties(
    deltas: list[torch.Tensor], weights: list[float], params: MethodParams
) -> torch.Tensor:
    """DARE's random drop and rescale, then TIES's sign election; the agreeing weighted deltas
    are summed, not divided by their weights (mergekit's dare_ties: normalize false)."""
    return _sign_elect(_dare(deltas, params), weights, normalise=False)


def subspace_orthogonal(
    deltas: list[torch.Tensor], weights: list[float], params: MethodParams
) -> torch.Tensor:
    """Geometry-aware merge: before adding, every other adapter's delta loses its component in
    the column space of the last adapter's delta (in medmerge's PT, SFT order: the SFT delta's
    output subspace is left to SFT alone):

        d_i' = (I - U Uᵀ) d_i,   U = left singular vectors of d_last with σ > σ_1 · max(m, n) · ε
        W' = W + w_last d_last + sum_{i != last} w_i d_i'

    d_i' = (B_i - U (Uᵀ B_i)) A_i keeps adapter i's rank. Where the last adapter does not touch
    the tensor, or the tensor is not a matrix, it is the linear merge."""
    protected = params.adapters - 1
    if protected not in params.owners or deltas[0].dim() != 2:
        return linear(deltas, weights, params)
    last = deltas[params.owners.index(protected)].double()
    u, sigma, _ = torch.linalg.svd(last, full_matrices=False)
    keep = sigma > sigma[0] * max(last.shape) * torch.finfo(torch.float64).eps
    basis = u[:, keep]
    projected = [
        d if owner == protected else d - (basis @ (basis.T @ d.double())).to(d.dtype)
        for d, owner in zip(deltas, params.owners, strict=True)
    ]
    return linear(projected, weights, params)


def keep_largest(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the k = max(1, floor(density * n)) entries of largest magnitude (mergekit's
    `magnitude` sparsification: exactly k kept, ties broken by a stable sort)."""
    if density >= 1.0:
        return delta
    if delta.numel() == 0:
        return delta
    keep = max(1, int(density * delta.numel()))
    order = torch.argsort(delta.abs().reshape(-1), descending=True, stable=True)[:keep]
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    mask[order] = True
    return torch.where(mask.reshape(delta.shape), delta, torch.zeros_like(delta))


def _dare(deltas: list[torch.Tensor], params: MethodParams) -> list[torch.Tensor]:
    """Keep each entry with probability `density`, then rescale the kept ones so the delta's
    L1 norm is what it was (mergekit's rescale; in expectation the 1/density of the paper)."""
    if params.density >= 1.0:
        return deltas
    generator = torch.Generator().manual_seed(params.seed)
    kept = []
    for delta in deltas:
        mask = torch.rand(delta.shape, generator=generator, dtype=torch.float64) < params.density
        masked = torch.where(mask, delta, torch.zeros_like(delta))
        before, after = float(delta.abs().sum()), float(masked.abs().sum())
        kept.append(masked * (before / after) if before >= 1e-7 and after >= 1e-7 else masked)
    return kept


def _sign_elect(deltas: list[torch.Tensor], weights: list[float], normalise: bool) -> torch.Tensor:
    """TIES's merge of weighted deltas w_i d_i: the elected sign of each entry is that of
    sum_i w_i d_i (+ where it is 0); entries whose w_i d_i has that sign agree (zeros never
    do); the result is sum of the agreeing w_i d_i, divided by the sum of the agreeing w_i
    when `normalise` (a divisor of 0 is taken as 1)."""
    weighted = torch.stack([d * w for d, w in zip(deltas, weights, strict=True)])
    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    agrees = torch.sign(weighted) == elected
    mixed = (weighted * agrees).sum(dim=0)
    if not normalise:
        return mixed
    shape = (len(weights),) + (1,) * (weighted.dim() - 1)
    column = torch.tensor(weights, dtype=weighted.dtype).reshape(shape)
    divisor = (column * agrees).sum(dim=0)
    return mixed / torch.where(divisor == 0, torch.ones_like(divisor), divisor)


METHODS: dict[str, MergeMethod] = {
    method.name: method
    for method in (
        MergeMethod("linear", linear, low_rank_exact=True, recompute="factors"),
        MergeMethod("ties", ties, parameters=("density",)),
        MergeMethod("dare_linear", dare_linear, parameters=("density", "seed")),
        MergeMethod("dare_ties", dare_ties, parameters=("density", "seed")),
        MergeMethod("magnitude_prune", magnitude_prune, parameters=("density",)),
        MergeMethod("subspace_orthogonal", subspace_orthogonal),
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
