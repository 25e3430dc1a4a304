"""Weight recovery: which weight each adapter actually has in W' - W, and what the mistake was."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medmerge.verify.tensors import FitSums

WEIGHT_TOLERANCE = 0.01
FOREIGN_RESIDUAL = 3.0  # unexplained change this many times the rounding noise is not rounding


@dataclass
class Recovery:
    weights: list[float]
    residual: float  # ||D - sum x_i d_i|| / ||D||
    noise_floor: float  # what rounding alone leaves unexplained, same scale

    @property
    def unexplained(self) -> bool:
        return self.residual > FOREIGN_RESIDUAL * self.noise_floor + 1e-6


def solve(fit: FitSums) -> Recovery:
    """Least squares over the whole model; a column with no data recovers as 0."""
    count = fit.rhs.numel()
    if count == 0 or fit.energy == 0:
        return Recovery([0.0] * count, 0.0, 0.0)
    solution = torch.linalg.lstsq(fit.gram, fit.rhs[:, None]).solution[:, 0]
    explained = 2 * float(solution @ fit.rhs) - float(solution @ fit.gram @ solution)
    residual = max(fit.energy - explained, 0.0) ** 0.5 / fit.energy**0.5
    return Recovery([float(x) for x in solution], residual, fit.noise**0.5 / fit.energy**0.5)


def diagnose(recovery: Recovery, intended: Sequence[float], labels: Sequence[str]) -> list[str]:
    """Name the mistake: scaled twice, missing adapter, swapped weights, foreign change."""
    found = recovery.weights
    problems = []
    if recovery.unexplained:
        problems.append(
            f"foreign change: {recovery.residual:.0%} of W' - W is not explained by the intended adapters "
            f"(rounding explains {recovery.noise_floor:.1%}); a foreign adapter or another edit was merged"
        )
    if all(abs(f - w) <= WEIGHT_TOLERANCE for f, w in zip(found, intended, strict=True)):
        return problems
    if len(found) > 1 and _is_permutation(found, intended):
        pairs = ", ".join(f"{label}={f:.3g}" for label, f in zip(labels, found, strict=True))
        return [*problems, f"weights swapped: found {pairs}, intended {_pairs(labels, intended)}"]
    for label, f, w in zip(labels, found, intended, strict=True):
        if abs(f - w) <= WEIGHT_TOLERANCE:
            continue
        problems.append(_one_adapter(label, f, w))
    return problems


def _one_adapter(label: str, found: float, intended: float) -> str:
    if abs(found) <= WEIGHT_TOLERANCE and abs(intended) > WEIGHT_TOLERANCE:
        return f"adapter missing: {label} has weight {found:.3g}, intended {intended:g}; it was left out of the merge"
    if abs(found - intended**2) <= WEIGHT_TOLERANCE and abs(intended) not in (0.0, 1.0):
        return (
            f"adapter scaled twice: {label} has weight {found:.3g} = {intended:g}^2, intended {intended:g}; "
            "both LoRA factors were multiplied by the weight"
        )
    return f"wrong weight: {label} has weight {found:.3g}, intended {intended:g}"


def _is_permutation(found: Sequence[float], intended: Sequence[float]) -> bool:
    for order in itertools.permutations(range(len(intended))):
        if list(order) == list(range(len(intended))):
            continue
        if all(abs(found[i] - intended[j]) <= WEIGHT_TOLERANCE for i, j in enumerate(order)):
            return True
    return False


def _pairs(labels: Sequence[str], weights: Sequence[float]) -> str:
    return ", ".join(f"{label}={w:g}" for label, w in zip(labels, weights, strict=True))
