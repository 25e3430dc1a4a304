"""Diagnosis by re-simulation, for a linear merge that is not exact: each named hypothesis
(how a tool rounds, or which mistake was made) is recomputed tensor by tensor and the merged
tensors are measured against it in ulps. A plain least-squares fit of W' - W cannot tell a
mistake from rounding (a delta under half an ulp rounds back to W and shrinks the fit), a
reference recomputed the way the mistake or the tool computes it can.

Rounding kinds, each from the fp64 deltas d_i of the adapters and weights x_i:
  once        round(W + sum_i x_i d_i)                      medmerge merge
  cat         round(W + round(sum_i x_i d_i))                PEFT add_weighted_adapter(cat)
                                                             + merge_and_unload
  sequential  W_i = round(W_{i-1} + x_i d_i)                 merge_and_unload per adapter,
                                                             LLaMA-Factory's export
  bf16 sums   t_i = round(W + d_i), v_i = bf16(t_i - W),     mergekit task_arithmetic with
              W' = round(W + bf16-sum of bf16(x_i) v_i)      dtype: bfloat16
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from medmerge.verify.tensors import ulp_error

_PRECISION = {torch.bfloat16: 8, torch.float16: 11, torch.float32: 24}
UlpBound = 1  # within 1 ulp of a hypothesis: explained by it
FOREIGN_ULPS = 4  # further than this from every reference: not a rounding difference


@dataclass(frozen=True)
class Hypothesis:
    """A way the merged tensors could have been made: weights, a rounding kind, and whether
    it means the weights are right (only the rounding differs) or a named mistake."""

    name: str
    weights: tuple[float, ...]
    rounding: str  # once | cat | sequential | bf16 sums | transposed
    weights_right: bool
    message: str


def hypotheses(
    intended: Sequence[float], labels: Sequence[str], dtype: torch.dtype
) -> list[Hypothesis]:
    """The named hypotheses for a merge intended at weights `intended`, in order of preference."""
    w = tuple(float(x) for x in intended)
    kind = str(dtype).removeprefix("torch.")
    found = [
        Hypothesis("exact", w, "once", True, "the intended merge rounded once"),
        Hypothesis("rounded twice", w, "cat", True,
                   f"rounded twice, as PEFT's add_weighted_adapter(cat) + merge_and_unload in {kind} does"),
        Hypothesis("rounded twice", w, "sequential", True,
                   f"rounded twice per adapter, as merge_and_unload of each adapter in {kind} does"),
        Hypothesis("bf16 sums", w, "bf16 sums", True,
                   "weights and sums quantised to bf16, as mergekit with dtype: bfloat16 does"),
    ]  # fmt: skip
    if any(x != 1.0 for x in w):
        found.append(
            Hypothesis("sequential weight 1", (1.0,) * len(w), "sequential", False,
                       "each adapter merged at weight 1, one after another (LLaMA-Factory's "
                       f"export), instead of at {_pairs(labels, w)}")
        )  # fmt: skip
    squared = tuple(x * x for x in w)
    if squared != w:
        for rounding in ("once", "sequential"):
            found.append(
                Hypothesis("scaled twice", squared, rounding, False,
                           f"adapter scaled twice: weights {_pairs(labels, squared)} = "
                           f"intended^2; both LoRA factors were multiplied by the weight")
            )  # fmt: skip
    for k, label in enumerate(labels):
        if w[k] == 0.0:
            continue
        left_out = tuple(0.0 if i == k else x for i, x in enumerate(w))
        for rounding in ("once", "sequential"):
            found.append(
                Hypothesis("adapter missing", left_out, rounding, False,
                           f"adapter missing: {label} was left out of the merge (weight 0, "
                           f"intended {w[k]:g})")
            )  # fmt: skip
    for permuted in _reorderings(w):
        if permuted != w:
            for rounding in ("once", "sequential"):
                found.append(
                    Hypothesis("weights swapped", permuted, rounding, False,
                               f"weights swapped: found {_pairs(labels, permuted)}, intended "
                               f"{_pairs(labels, w)}")
                )  # fmt: skip
    found.append(
        Hypothesis("transposed", w, "transposed", False,
                   "transposed module: its delta is (B·A)ᵀ where the base stores B·A (or the "
                   "other way round), a Conv1D/Linear layout applied to the wrong module")
    )  # fmt: skip
    total = sum(w)
    if total not in (0.0, 1.0):
        normalised = tuple(x / total for x in w)
        found.append(
            Hypothesis("normalised", normalised, "once", False,
                       f"weights normalised to sum 1 ({_pairs(labels, normalised)}), as mergekit's "
                       "linear with normalize: true does; pass normalize: false")
        )  # fmt: skip
    return found


def _reorderings(weights: tuple[float, ...]) -> list[tuple[float, ...]]:
    """Every permutation of up to 3 weights; for more adapters the swaps of two (the
    permutations would be thousands of hypotheses)."""
    if len(weights) <= 3:
        orders = itertools.permutations(range(len(weights)))
        return [tuple(weights[i] for i in order) for order in orders]
    swapped = []
    for i, j in itertools.combinations(range(len(weights)), 2):
        order = list(weights)
        order[i], order[j] = order[j], order[i]
        swapped.append(tuple(order))
    return swapped


def _pairs(labels: Sequence[str], weights: Sequence[float]) -> str:
    return ", ".join(f"{label}={x:.4g}" for label, x in zip(labels, weights, strict=True))


def reference(
    base: torch.Tensor,
    deltas: list[tuple[int, torch.Tensor]],
    weights: Sequence[float],
    rounding: str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The merged tensor as `rounding` makes it from W, the adapters' deltas and `weights`."""
    w = base.double()
    if rounding == "transposed":  # square tensors only: any other shape cannot be transposed
        flipped = [(i, d.T if d.dim() == 2 and d.shape[0] == d.shape[1] else d) for i, d in deltas]
        return _sum(w, flipped, weights).to(dtype)
    if rounding == "once":
        return _sum(w, deltas, weights).to(dtype)
    if rounding == "cat":
        return (w + (_sum(torch.zeros_like(w), deltas, weights).to(dtype)).double()).to(dtype)
    if rounding == "sequential":
        out = base.to(dtype)
        for i, d in deltas:
            out = (out.double() + weights[i] * d).to(dtype)
        return out
    acc = torch.zeros_like(w, dtype=torch.bfloat16)  # bf16 sums
    for i, d in deltas:
        vector = ((w + d).to(dtype).double() - w).to(torch.bfloat16)
        scaled = (vector.double() * float(torch.tensor(weights[i]).to(torch.bfloat16))).to(
            torch.bfloat16
        )
        acc = (acc.double() + scaled.double()).to(torch.bfloat16)
    return (w + acc.double()).to(dtype)


def _sum(start: torch.Tensor, deltas, weights) -> torch.Tensor:
    total = start.clone()
    for i, d in deltas:
        total.add_(d, alpha=weights[i])
    return total


@dataclass
class Evidence:
    """How far one hypothesis's reference is from the merged tensors, tensor by tensor."""

    hypothesis: Hypothesis
    off: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (over 1 ulp, max)

    @property
    def explained(self) -> list[str]:
        return [n for n, (over, _) in self.off.items() if over == 0]

    def add(self, name: str, ulps: torch.Tensor, allowed: torch.Tensor | None = None) -> None:
        off = ulps > UlpBound if allowed is None else (ulps > UlpBound) & ~allowed
        self.off[name] = (int(off.sum()), int(ulps.max()) if ulps.numel() else 0)


# A tool that computes the delta in the checkpoint dtype (factors cast to bf16, B @ A
# rounded) is off by a few of that dtype's epsilons of the delta itself, not of W'.
DELTA_EPSILONS = 4


def _low_precision_delta_error(merged, ref, deltas, weights) -> torch.Tensor:
    """Where |W' - ref| is within DELTA_EPSILONS epsilons of sum_i |x_i d_i|."""
    spread = torch.zeros_like(ref, dtype=torch.float64)
    for i, d in deltas:
        spread.add_(d.abs(), alpha=abs(weights[i]))
    eps = 2.0 ** -_PRECISION.get(merged.dtype, 53)
    return (merged.double() - ref.double()).abs() <= DELTA_EPSILONS * eps * spread


def measure(tensors: Callable[[], object], candidates: Sequence[Hypothesis]) -> list[Evidence]:
    """Every hypothesis's distance from the merged tensors; `tensors()` yields
    (name, base, merged, deltas) for each touched tensor."""
    evidence = [Evidence(h) for h in candidates]
    for name, base, merged, deltas in tensors():
        cache: dict[tuple, torch.Tensor] = {}
        for item in evidence:
            h = item.hypothesis
            key = (h.weights, h.rounding)
            if key not in cache:
                cache[key] = reference(base, deltas, h.weights, h.rounding, merged.dtype)
            ref = cache[key]
            allowed = None
            if h.rounding not in ("once", "transposed"):
                allowed = _low_precision_delta_error(merged, ref, deltas, h.weights)
            item.add(name, ulp_error(merged, ref), allowed)
    return evidence


@dataclass
class RoundingAwareFit:
    """Least squares of W' - W onto the d_i over the elements whose intended change is over
    RESOLVED_ULPS ulps of W: there rounding adds noise of at most half an ulp in either
    direction; elsewhere it rounds the change to zero and biases a plain fit towards 0."""

    gram: torch.Tensor
    rhs: torch.Tensor
    elements: int = 0

    @classmethod
    def empty(cls, count: int) -> RoundingAwareFit:
        return cls(
            torch.zeros(count, count, dtype=torch.float64), torch.zeros(count, dtype=torch.float64)
        )

    def add(self, base, merged, deltas, weights) -> None:
        w = base.double()
        intended = _sum(torch.zeros_like(w), deltas, weights)
        _, exponent = torch.frexp(w)
        ulp = torch.ldexp(torch.ones_like(w), exponent - _PRECISION.get(merged.dtype, 53))
        mask = intended.abs() > RESOLVED_ULPS * ulp
        self.elements += int(mask.sum())
        change = (merged.double() - w)[mask]
        columns = [(i, d[mask]) for i, d in deltas]
        for i, di in columns:
            self.rhs[i] += float(di @ change)
            for j, dj in columns:
                self.gram[i, j] += float(di @ dj)

    def weights(self) -> list[float]:
        return [float(x) for x in torch.linalg.lstsq(self.gram, self.rhs[:, None]).solution[:, 0]]


RESOLVED_ULPS = 4


@dataclass
class Diagnosis:
    verdict: str  # EXACT | WEIGHTS RIGHT, NOT EXACTLY ROUNDED | WRONG | INDISTINGUISHABLE ...
    lines: list[str]
    weights: list[float] | None = None  # the rounding-aware estimate, where it was needed


RIGHT = "WEIGHTS RIGHT, NOT EXACTLY ROUNDED"
INDISTINGUISHABLE = "INDISTINGUISHABLE AT THIS PRECISION"


def judge(evidence: list[Evidence], fit: RoundingAwareFit, intended, labels) -> Diagnosis:
    """The verdict on the touched tensors from each hypothesis's evidence (exact first)."""
    names = list(evidence[0].off)
    exact = evidence[0]
    full = [e for e in evidence if len(e.explained) == len(names)]
    if full and full[0] is exact:
        return Diagnosis("EXACT", [])
    if full:
        right = [e for e in full if e.hypothesis.weights_right]
        wrong = [e for e in full if not e.hypothesis.weights_right]
        if right and wrong:
            return Diagnosis(INDISTINGUISHABLE, [
                f"indistinguishable at this precision: the merged tensors are within 1 ulp of "
                f"both '{right[0].hypothesis.message}' and '{wrong[0].hypothesis.message}'; "
                "merge in fp32 to tell them apart"])  # fmt: skip
        chosen = (right or wrong)[0]
        verdict = RIGHT if right else "WRONG"
        lines = [f"{chosen.hypothesis.message}: {_evidence(exact, chosen)}"]
        return Diagnosis(verdict, lines, list(chosen.hypothesis.weights))
    best = max(evidence, key=lambda e: len(e.explained))
    if not best.explained:
        return _from_fit(exact, fit, intended, labels)
    return _partly_explained(best, evidence, names)


def _evidence(exact: Evidence, chosen: Evidence) -> str:
    over = sum(o for o, _ in exact.off.values())
    worst = max((m for _, m in exact.off.values()), default=0)
    return (
        f"{over:,} elements up to {worst} ulp from the merge rounded once, every element "
        "within 1 ulp of this reference (or of the delta's own rounding)"
    )


def _partly_explained(best: Evidence, evidence: list[Evidence], names: list[str]) -> Diagnosis:
    unexplained = [n for n in names if n not in best.explained]
    lines, foreign = [], False
    for name in unexplained:
        over, worst = best.off[name]
        other = next((e for e in evidence if name in e.explained), None)
        if other is not None and not other.hypothesis.weights_right:
            lines.append(f"{name}: {other.hypothesis.message}")
            foreign = True
        elif worst > FOREIGN_ULPS or not best.hypothesis.weights_right:
            lines.append(
                f"foreign change: {name}: {over:,} elements up to {worst} ulp off the intended "
                "merge and every named way of making it; the tensor was edited or another "
                "adapter merged into it"
            )
            foreign = True
    if not best.hypothesis.weights_right:
        lines.insert(
            0, f"{best.hypothesis.message} (explains {len(best.explained)} of {len(names)} tensors)"
        )
    if foreign or not best.hypothesis.weights_right:
        return Diagnosis("WRONG", lines, list(best.hypothesis.weights))
    over = sum(best.off[n][0] for n in unexplained)
    worst = max(best.off[n][1] for n in unexplained)
    return Diagnosis(RIGHT, [
        f"{best.hypothesis.message}, closest: {len(best.explained)} of {len(names)} tensors "
        f"within 1 ulp, {over:,} elements elsewhere up to {worst} ulp"],
        list(best.hypothesis.weights))  # fmt: skip


def _from_fit(exact: Evidence, fit: RoundingAwareFit, intended, labels) -> Diagnosis:
    """No named hypothesis explains a tensor: estimate the weights from the resolved elements."""
    from medmerge.verify.recovery import Recovery, diagnose

    if fit.elements == 0:
        return Diagnosis(INDISTINGUISHABLE, [
            "indistinguishable at this precision: no intended change is over "
            f"{RESOLVED_ULPS} ulp of its weight, so the weights cannot be recovered; merge in "
            "fp32 to check them"])  # fmt: skip
    weights = fit.weights()
    named = diagnose(Recovery(weights, 0.0, 0.0), intended, labels)
    if named:
        return Diagnosis("WRONG", named, weights)
    worst = max((m for _, m in exact.off.values()), default=0)
    over = sum(o for o, _ in exact.off.values())
    if worst > FOREIGN_ULPS:
        return Diagnosis("WRONG", [
            f"foreign change: the weights fit the intended ones ({_pairs(labels, weights)}) "
            f"but {over:,} elements are up to {worst} ulp off the intended merge; another "
            "change was merged too"], weights)  # fmt: skip
    return Diagnosis(RIGHT, [
        f"not exactly rounded: {over:,} elements up to {worst} ulp from the merge rounded "
        f"once; no named tool's rounding reproduces it, the weights fit the intended ones "
        f"({_pairs(labels, weights)})"], weights)  # fmt: skip
