"""Cross-validated linear probes: can a layer's state predict a label (e.g. "this prompt's
answer will leak thinking")?

A probe is L2-regularised logistic regression (full-batch L-BFGS, features standardised on
the training folds only), scored by stratified k-fold cross-validation: every item is
predicted once by a probe that never saw it. The control is the same probe on labels
shuffled with a fixed seed: a layer "knows" the label only where its accuracy clears the
control's, not where it clears 0.5 (an unbalanced label set is easy to guess).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProbeResult:
    hits: tuple[bool, ...]  # per item: was its held-out prediction right
    majority: float  # accuracy of always answering the most common label

    @property
    def correct(self) -> int:
        return sum(self.hits)

    @property
    def n(self) -> int:
        return len(self.hits)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """k folds of item indices, each label spread over the folds round-robin."""
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    position = 0
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        for index in members:
            folds[position % k].append(index)
            position += 1
    return folds


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, steps: int = 200) -> torch.Tensor:
    """Weights [d + 1] (bias last) of L2 logistic regression on standardised x, y in {0, 1}."""
    design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    weights = torch.zeros(design.shape[1], dtype=x.dtype, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [weights],
        max_iter=steps,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )
    target = y.to(x.dtype)

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        logits = design @ weights
        value = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        value = value + l2 * (weights[:-1] ** 2).sum() / 2
        value.backward()
        return value

    optimiser.step(loss)
    return weights.detach()


def probe_accuracy(
    states: torch.Tensor, labels: Sequence[int], folds: int = 5, seed: int = 0, l2: float = 1e-2
) -> ProbeResult:
    """Held-out accuracy of a binary probe on `states` [n, d] by stratified k-fold CV."""
    values = sorted(set(labels))
    if len(values) != 2:
        raise ValueError(f"a probe needs two label values, got {values}")
    if min(labels.count(v) for v in values) < folds:
        raise ValueError(f"each label needs at least {folds} items for {folds}-fold CV")
    y = torch.tensor([values.index(v) for v in labels])
    x = states.double()
    hits = [False] * len(labels)
    for held_out in stratified_folds(list(y.tolist()), folds, seed):
        train = torch.ones(len(y), dtype=torch.bool)
        train[held_out] = False
        mean, std = x[train].mean(0), x[train].std(0).clamp(min=1e-12)
        weights = fit_logistic((x[train] - mean) / std, y[train], l2)
        test = (x[held_out] - mean) / std
        logits = torch.cat([test, torch.ones(len(held_out), 1, dtype=x.dtype)], 1) @ weights
        right = ((logits > 0).long() == y[held_out]).tolist()
        for index, hit in zip(held_out, right, strict=True):
            hits[index] = bool(hit)
    majority = max(labels.count(v) for v in values) / len(labels)
    return ProbeResult(tuple(hits), majority)


def shuffled(labels: Sequence[int], seed: int) -> list[int]:
    """The same labels in a seeded random order: the probe's control."""
    out = list(labels)
    random.Random(seed).shuffle(out)
    return out
