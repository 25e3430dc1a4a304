"""Adversarial rounding cases for the merge arithmetic: W + delta that nearly cancels, tiny
results, results exactly on a rounding tie. The streamed path (reused buffers) and the
plain path must both give round(W + delta computed in fp64), bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.factories import ulp_distance
from medmerge.checkpoints import Scratch
from medmerge.lora import Adapter, LoraFactors, WeightPlan, merged_weight

NAME = "model.layers.0.mlp.up_proj.weight"
WEIGHTS = (0.3, 0.7)


def _adapters(factors: list[tuple[torch.Tensor, torch.Tensor, float]]) -> list[Adapter]:
    return [
        Adapter(Path(f"a{i}"), {}, factors={NAME: LoraFactors("m", A, B, scale)})
        for i, (A, B, scale) in enumerate(factors)
    ]


def _exact(base, factors, weights=WEIGHTS) -> torch.Tensor:
    total = base.double().clone()
    for (A, B, scale), w in zip(factors, weights, strict=True):
        total += (w * scale) * (B.double() @ A.double())
    return total


def _both_paths(base, factors, dtype, weights=WEIGHTS):
    adapters, plan = _adapters(factors), WeightPlan(tuple(weights))
    plain = merged_weight(NAME, adapters, plan, base, dtype)
    scratch = Scratch()
    streamed = merged_weight(NAME, adapters, plan, base, dtype, scratch=scratch).clone()
    return plain, streamed


def _random_factors(generator, out_f=96, in_f=80):
    return [
        (
            torch.randn(r, in_f, generator=generator) * 0.05,
            torch.randn(out_f, r, generator=generator) * 0.05,
            scale,
        )
        for r, scale in ((3, 2.0), (11, 0.5))
    ]


@pytest.mark.parametrize(
    ("dtype", "spread"),
    # fp32 keeps 1e-5 of the delta: fp64's own error (~1e-16 of the terms) must stay far
    # below an fp32 ulp of the result, or no fp64 computation could be the reference.
    [(torch.bfloat16, 0.0), (torch.float16, 0.0), (torch.float32, 1e-5)],
)
def test_near_cancellation_and_tiny_results(dtype, spread):
    generator = torch.Generator().manual_seed(0)
    factors = _random_factors(generator)
    delta = _exact(torch.zeros(96, 80), factors)
    # W is -delta rounded to the output dtype (times 1 + spread * noise), nudged by an ulp in
    # places: W + delta is then tiny, of either sign, often a rounding error of -delta.
    sign = torch.randint(0, 2, delta.shape, generator=generator) * 2 - 1
    noise = sign * (1 + 2 * torch.rand(delta.shape, generator=generator, dtype=torch.float64))
    base = (-delta * (1 + spread * noise)).to(dtype)
    nudge = torch.randint(-2, 3, base.shape, generator=generator)
    base = torch.where(nudge != 0, torch.nextafter(base, base * (1 + nudge)), base)
    exact = _exact(base, factors)
    assert float(exact.abs().median()) < float(delta.abs().median()) * 1e-2
    want = exact.to(dtype)
    for got in _both_paths(base, factors, dtype):
        assert ulp_distance(got, want) <= 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_results_exactly_on_rounding_ties(dtype):
    """W + delta = a midpoint between two neighbours: round half to even, as fp64 -> dtype."""
    ulp = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    base = torch.tensor([[1.0, 1.0 + ulp, -1.0, -(1.0 + ulp)]], dtype=dtype)
    # delta = w * s * B @ A = half an ulp at 1.0 for every element (weights 1, scale 1).
    A = torch.ones(1, 4)
    B = torch.full((1, 1), ulp / 2)
    factors = [(A, B, 1.0)]
    exact = _exact(base, factors, weights=(1.0,))
    assert torch.equal(
        exact,
        torch.tensor(
            [[1 + ulp / 2, 1 + 1.5 * ulp, -1 + ulp / 2, -1 - ulp / 2]], dtype=torch.float64
        ),
    )
    want = exact.to(dtype)
    for got in _both_paths(base, factors, dtype, weights=(1.0,)):
        assert torch.equal(got, want)
