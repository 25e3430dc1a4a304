"""Probes: planted separable states ≈ 1, shuffled labels ≈ chance, the fit equals scipy's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from medmerge.mechanism.probes import fit_logistic, probe_accuracy, shuffled, stratified_folds


def planted(n: int = 200, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    rng = np.random.default_rng(seed)
    labels = [int(i % 2) for i in range(n)]
    states = rng.normal(size=(n, d))
    states[:, 5] += np.where(np.array(labels) == 1, 3.0, -3.0)  # one separating direction
    return torch.tensor(states), labels


def test_a_probe_reads_a_planted_direction_and_not_shuffled_labels():
    states, labels = planted()
    assert probe_accuracy(states, labels).accuracy > 0.95
    control = probe_accuracy(states, shuffled(labels, seed=1))
    assert 0.35 < control.accuracy < 0.65  # chance, within sampling error at n = 200
    assert control.majority == 0.5


def test_the_logistic_fit_equals_an_independent_minimisation():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 4))
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=80) > 0).astype(float)
    l2 = 0.05

    def objective(w):
        z = x @ w[:-1] + w[-1]
        return np.mean(np.logaddexp(0, z) - y * z) + l2 * np.sum(w[:-1] ** 2) / 2

    reference = minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-10}).x
    ours = fit_logistic(torch.tensor(x), torch.tensor(y), l2).numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_folds_are_stratified_and_cover_every_item_once():
    labels = [0] * 30 + [1] * 10
    folds = stratified_folds(labels, 5, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(40))
    assert [sum(labels[i] for i in fold) for fold in folds] == [2] * 5


def test_a_probe_refuses_one_label_or_too_few_items():
    states, _ = planted(n=20)
    with pytest.raises(ValueError, match="two label values"):
        probe_accuracy(states, [1] * 20)
    with pytest.raises(ValueError, match="at least 5 items"):
        probe_accuracy(states, [1] * 17 + [0] * 3)
