"""Merge methods on dense deltas, by hand-computed examples; per-group and per-layer weights."""

from __future__ import annotations

import pytest
import torch

from medmerge.errors import MergeError
from medmerge.lora import WeightPlan
from medmerge.lora.methods import METHODS, MethodParams, get_method, keep_largest


def test_linear_is_the_weighted_sum():
    a, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    got = METHODS["linear"]([a, b], [0.3, 0.7], MethodParams())
    assert torch.allclose(got, 0.3 * a + 0.7 * b, rtol=1e-15, atol=1e-300)


def test_keep_largest_keeps_top_fraction():
    delta = torch.tensor([0.1, -5.0, 2.0, -0.3])
    assert torch.equal(keep_largest(delta, 0.5), torch.tensor([0.0, -5.0, 2.0, 0.0]))


def test_ties_sign_election_and_disjoint_mean():
    a = torch.tensor([1.0, -2.0, 3.0, 0.0], dtype=torch.float64)
    b = torch.tensor([3.0, 1.0, -1.0, 4.0], dtype=torch.float64)
    got = METHODS["ties"]([a, b], [1.0, 1.0], MethodParams(density=1.0))
    # entry 0: both +, mean 2; entry 1: sum -1 -> '-' wins, only a agrees: -2;
    # entry 2: sum +2 -> only a: 3; entry 3: only b non-zero: 4
    assert torch.equal(got, torch.tensor([2.0, -2.0, 3.0, 4.0], dtype=torch.float64))


def test_dare_is_seeded_and_unbiased():
    delta = torch.ones(200, 200, dtype=torch.float64)
    params = MethodParams(density=0.25, seed=7)
    first = METHODS["dare_linear"]([delta], [1.0], params)
    assert torch.equal(first, METHODS["dare_linear"]([delta], [1.0], params))
    kept = first[first != 0]
    assert abs(kept.numel() / delta.numel() - 0.25) < 0.01
    # mergekit's rescale: the kept entries restore the delta's L1 norm exactly
    assert torch.allclose(first.abs().sum(), delta.abs().sum(), rtol=1e-12)
    assert torch.allclose(kept, torch.full_like(kept, float(kept[0])), rtol=1e-15)
    assert not torch.equal(
        first, METHODS["dare_linear"]([delta], [1.0], MethodParams(density=0.25, seed=8))
    )


def test_magnitude_prune_and_dare_ties_run_on_dense_deltas():
    a, b = torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    pruned = METHODS["magnitude_prune"]([a, b], [0.5, 0.5], MethodParams(density=0.5))
    assert torch.allclose(
        pruned, 0.5 * keep_largest(a, 0.5) + 0.5 * keep_largest(b, 0.5), rtol=1e-15
    )
    assert METHODS["dare_ties"]([a, b], [0.5, 0.5], MethodParams(density=0.5)).shape == a.shape


def test_unknown_method_suggests():
    with pytest.raises(MergeError, match="did you mean 'ties'"):
        get_method("tie")


def test_weight_plan_layers_beat_groups_beat_global():
    plan = WeightPlan((0.3, 0.7), {"mlp": (0.1, 0.9)}, ((1, 1, (1.0, 0.0)),))
    assert plan.for_tensor("model.layers.0.self_attn.q_proj.weight") == (0.3, 0.7)
    assert plan.for_tensor("model.layers.0.mlp.up_proj.weight") == (0.1, 0.9)
    assert plan.for_tensor("model.layers.1.mlp.up_proj.weight") == (1.0, 0.0)
    assert plan.for_tensor("lm_head.weight") == (0.3, 0.7)


def test_ties_divides_by_the_weights_of_the_agreeing_entries():
    """Agreeing deltas of 1 at weights 0.3 / 0.7 merge to 1, as linear does (mergekit)."""
    ones = torch.ones(3, dtype=torch.float64)
    got = METHODS["ties"]([ones, ones], [0.3, 0.7], MethodParams(density=1.0))
    assert torch.allclose(got, ones, rtol=1e-15)
    a = torch.tensor([2.0, -2.0], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    got = METHODS["ties"]([a, b], [0.3, 0.7], MethodParams(density=1.0))
    # entry 0: both agree: (0.6 + 0.7) / 1.0; entry 1: -0.6 + 0.7 > 0 -> only b: 0.7 / 0.7
    assert torch.allclose(got, torch.tensor([1.3, 1.0], dtype=torch.float64), rtol=1e-15)
