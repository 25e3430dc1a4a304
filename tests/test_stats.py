"""medmerge.stats against scipy: binomial CIs, bootstrap with the same seed, McNemar, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from medmerge import stats


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (17, 24), (845, 1273), (1, 2)])
def test_binomial_intervals_match_scipy(k, n):
    result = sps.binomtest(k, n)
    exact = result.proportion_ci(0.95, method="exact")
    wilson = result.proportion_ci(0.95, method="wilson")
    assert stats.exact_interval(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
    assert stats.wilson_interval(k, n) == pytest.approx((wilson.low, wilson.high), abs=1e-12)
    estimate = stats.proportion(k, n, "exact")
    assert estimate.estimate == k / n
    assert estimate.stderr == pytest.approx(math.sqrt(k / n * (1 - k / n) / n))


def test_binomial_cdf_matches_scipy():
    for k, n, p in [(0, 5, 0.5), (7, 20, 0.3), (400, 1000, 0.41), (3, 3, 0.2)]:
        assert stats.binomial_cdf(k, n, p) == pytest.approx(sps.binom.cdf(k, n, p), rel=1e-10)


def test_bootstrap_equals_scipy_with_the_same_seed():
    values = np.random.default_rng(5).normal(30, 10, size=37)
    ours = stats.bootstrap(stats.mean_of(values), len(values), resamples=500, seed=11)
    theirs = sps.bootstrap(
        (values,),
        np.mean,
        n_resamples=500,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(11),
    )
    assert ours.estimate == pytest.approx(values.mean())
    assert ours.stderr == pytest.approx(theirs.standard_error, rel=1e-12)
    assert (ours.ci_low, ours.ci_high) == pytest.approx(
        (theirs.confidence_interval.low, theirs.confidence_interval.high), rel=1e-12
    )


def test_paired_bootstrap_equals_scipy_paired_draw():
    rng = np.random.default_rng(2)
    a, b = rng.normal(20, 5, 41), rng.normal(22, 5, 41)
    ours = stats.paired_bootstrap(stats.mean_of(a), stats.mean_of(b), 41, resamples=400, seed=3)
    replicates = []
    theirs = sps.bootstrap(
        (a, b),
        lambda x, y: replicates.append(np.mean(y) - np.mean(x)) or replicates[-1],
        n_resamples=400,
        paired=True,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(3),
    )
    deltas = np.array(replicates[-400:])
    assert ours.difference == pytest.approx(b.mean() - a.mean())
    assert ours.stderr == pytest.approx(theirs.standard_error, rel=1e-12)
    assert ours.ci_low == pytest.approx(theirs.confidence_interval.low, rel=1e-12)
    expected_p = min(1, 2 * min((deltas <= 0).sum() + 1, (deltas >= 0).sum() + 1) / 401)
    assert ours.p_value == pytest.approx(expected_p)


def test_mcnemar_exact_matches_binomtest():
    a = [True] * 30 + [False] * 20
    b = [True] * 25 + [False] * 5 + [True] * 10 + [False] * 10
    only_a, only_b = 5, 10
    expected = sps.binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue
    assert stats.mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)
    diff = stats.accuracy_difference(a, b)
    assert diff.difference == pytest.approx((35 - 30) / 50)
    assert diff.p_value == pytest.approx(expected)
    assert stats.mcnemar_exact([True, False], [True, False]) == 1.0
    # 5 discordant pairs all one way: 2 / 2**5
    assert stats.mcnemar_exact([False] * 5 + [True] * 45, [True] * 50) == pytest.approx(0.0625)


def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # 2 x 0.5, capped


def test_format_and_half_width():
    assert str(stats.Estimate(1273, 0.664, 0.013, 0.638, 0.690, "wilson")) == "0.664 ± 0.026"
    assert stats.plus_minus(24.32, 1.5) == "24.32 ± 1.50"
    assert stats.accuracy_half_width(24) == pytest.approx(0.1857, abs=1e-3)
    assert stats.min_detectable_difference(0.01) == pytest.approx(0.028, abs=1e-3)


def test_accuracy_difference_ci_stays_within_minus_one_and_one():
    diff = stats.accuracy_difference([True, False, False], [False, True, True])
    assert -1.0 <= diff.ci_low <= diff.ci_high <= 1.0
