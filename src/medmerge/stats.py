"""Uncertainty of every reported number, and tests of differences between two runs.

- A proportion (accuracy, think rate) gets a Wilson score interval, or the exact
  Clopper-Pearson interval; its standard error is sqrt(p (1 - p) / n).
- Any other number (BLEU, ROUGE, mean lengths, a corpus metric) gets a seeded bootstrap over
  items: B resamples of item indices drawn as `numpy.random.default_rng(seed).integers(0, n,
  (B, n))` (the draw scipy.stats.bootstrap makes), the statistic recomputed on each
  resample, the standard error the replicates' standard deviation (ddof 1) and the CI their
  percentiles (numpy's linear interpolation).
- Two runs on the same items: exact McNemar on the discordant pairs for accuracy, a paired
  bootstrap (one index draw applied to both runs) for everything else, whose two-sided
  p-value is 2 min(#{d* <= 0} + 1, #{d* >= 0} + 1) / (B + 1), capped at 1. Holm's step-down
  adjustment across the metrics of one comparison.
- The minimum detectable difference at this n (5 % two-sided, 80 % power) is
  (z_0.975 + z_0.8) x the standard error of the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
POWER = 0.8


@dataclass(frozen=True)
class Estimate:
    """A number with its n, standard error and confidence interval (and how it was got)."""

    n: int
    estimate: float
    stderr: float
    ci_low: float
    ci_high: float
    method: str
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def __str__(self) -> str:
        return plus_minus(self.estimate, self.half_width)


def plus_minus(estimate: float, half_width: float) -> str:
    """`0.664 ± 0.026`: 3 decimals for values within [-1, 1], 2 for scores on a 0-100 scale."""
    digits = 3 if abs(estimate) <= 1 and abs(half_width) <= 1 else 2
    return f"{estimate:.{digits}f} ± {half_width:.{digits}f}"


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    z, p = _z(level), successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _log_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    log_choose = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_choose + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (no scipy at run time)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = np.array([_log_pmf(i, n, p) for i in range(k + 1)])
    top = logs.max()
    if top == -math.inf:
        return 0.0
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def _solve(decreasing: Callable[[float], float], target: float) -> float:
    """The p in [0, 1] where a decreasing function of p crosses target (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(80):
        middle = (low + high) / 2
        if decreasing(middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def exact_interval(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else _solve(lambda p: binomial_cdf(successes - 1, n, p), 1 - tail)
    high = 1.0 if successes == n else _solve(lambda p: binomial_cdf(successes, n, p), tail)
    return low, high


def proportion(successes: int, n: int, method: str = "wilson", level: float = LEVEL) -> Estimate:
    """A rate with its standard error and a Wilson or exact binomial CI."""
    interval = {"wilson": wilson_interval, "exact": exact_interval}[method]
    p = successes / n if n else 0.0
    low, high = interval(successes, n, level)
    stderr = math.sqrt(p * (1 - p) / n) if n else 0.0
    return Estimate(n, p, stderr, low, high, method, level)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The (resamples, n) item indices of a seeded bootstrap (scipy.stats.bootstrap's draw)."""
    return np.random.default_rng(seed).integers(0, n, (resamples, n))


def _summarise(point: float, replicates: np.ndarray, n: int, method: str, level: float):
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    stderr = float(np.std(replicates, ddof=1)) if len(replicates) > 1 else 0.0
    return Estimate(n, float(point), stderr, float(low), float(high), method, level)


# a statistic of the items chosen by an index array (a resample, or all of them)
Statistic = Callable[[np.ndarray], float]


def bootstrap(
    statistic: Statistic, n: int, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> Estimate:
    """Seeded bootstrap over n items of `statistic(indices)`, recomputed on every resample."""
    if n == 0:
        return Estimate(0, 0.0, 0.0, 0.0, 0.0, "bootstrap", level)
    indices = resample_indices(n, resamples, seed)
    replicates = np.array([statistic(row) for row in indices], dtype=np.float64)
    return _summarise(statistic(np.arange(n)), replicates, n, "bootstrap", level)


def mean_of(values: Sequence[float]) -> Statistic:
    """The statistic `mean of the chosen items' values` (BLEU-4 and ROUGE, lengths)."""
    array = np.asarray(values, dtype=np.float64)
    return lambda indices: float(array[indices].mean())


@dataclass(frozen=True)
class Difference:
    """b - a on the items two runs share, with its CI and two-sided p-value."""

    n: int
    a: float
    b: float
    difference: float
    stderr: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    min_detectable: float
    level: float = LEVEL

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def min_detectable_difference(stderr: float, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at 1 - level detects with this power."""
    return (_z(level) + NormalDist().inv_cdf(power)) * stderr


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> float:
    """Exact McNemar p-value: two-sided binomial test of the discordant pairs at 1/2."""
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a_correct, b_correct, strict=True))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a_correct, b_correct, strict=True))
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    return min(1.0, 2 * binomial_cdf(min(only_a, only_b), discordant, 0.5))


def accuracy_difference(
    a_correct: Sequence[bool], b_correct: Sequence[bool], level: float = LEVEL
) -> Difference:
    """b's accuracy minus a's on paired items: McNemar's exact p, a Wald CI of the paired
    difference (the per-item differences' standard error)."""
    a = np.asarray(a_correct, dtype=np.float64)
    b = np.asarray(b_correct, dtype=np.float64)
    n = len(a)
    diffs = b - a
    stderr = float(np.std(diffs, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    delta = float(diffs.mean()) if n else 0.0
    half = _z(level) * stderr
    return Difference(
        n,
        float(a.mean()) if n else 0.0,
        float(b.mean()) if n else 0.0,
        delta,
        stderr,
        max(-1.0, delta - half),  # a difference of rates lies in [-1, 1]
        min(1.0, delta + half),
        mcnemar_exact(a_correct, b_correct),
        "mcnemar_exact",
        min_detectable_difference(stderr, level),
        level,
    )


def paired_bootstrap(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> Difference:
    """b - a of a statistic on the same resampled items (one index draw for both runs)."""
    everything = np.arange(n)
    a, b = statistic_a(everything), statistic_b(everything)
    indices = resample_indices(n, resamples, seed)
    deltas = np.array([statistic_b(row) - statistic_a(row) for row in indices])
    summary = _summarise(b - a, deltas, n, "paired_bootstrap", level)
    below, above = int((deltas <= 0).sum()), int((deltas >= 0).sum())
    p_value = min(1.0, 2 * min(below + 1, above + 1) / (resamples + 1))
    return Difference(
        n,
        float(a),
        float(b),
        summary.estimate,
        summary.stderr,
        summary.ci_low,
        summary.ci_high,
        p_value,
        "paired_bootstrap",
        min_detectable_difference(summary.stderr, level),
        level,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def accuracy_half_width(n: int, p: float = 0.5, level: float = LEVEL) -> float:
    """Half-width of the Wilson CI of an accuracy p measured on n items (power warnings)."""
    k = round(p * n)
    low, high = wilson_interval(k, n, level)
    return (high - low) / 2
