"""The LoRA check's inner products from the factors equal the same sums over dense deltas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmerge.lora import (
    Adapter,
    LoraFactors,
    MethodParams,
    WeightPlan,
    adapter_deltas,
    intended_delta,
    merged_weight,
    stacked_factors,
)
from medmerge.lora import delta as delta_module
from medmerge.verify.tensors import FitSums, check_touched

NAME = "model.layers.0.mlp.up_proj.weight"


def _adapters(generator, transpose: bool) -> list[Adapter]:
    out_f, in_f = (40, 56) if not transpose else (56, 40)
    return [
        Adapter(
            Path(f"a{i}"),
            {},
            factors={
                NAME: LoraFactors(
                    "m",
                    torch.randn(r, in_f, generator=generator) * 0.05,
                    torch.randn(out_f, r, generator=generator) * 0.05,
                    scale,
                    transpose=transpose,
                )
            },
        )
        for i, (r, scale) in enumerate(((3, 2.0), (7, 0.5)))
    ]


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("made_with", [(0.3, 0.7), (0.25, 0.8)])
@pytest.mark.parametrize("rows_per_block", [None, 3])  # 3: many blocks and a ragged last one
def test_factor_sums_equal_dense_sums(transpose, made_with, rows_per_block, monkeypatch):
    if rows_per_block is not None:
        monkeypatch.setattr(delta_module, "_BLOCK_BYTES", 8 * 56 * rows_per_block)
    generator = torch.Generator().manual_seed(1)
    adapters = _adapters(generator, transpose)
    base = (torch.randn(40, 56, generator=generator) * 0.02).to(torch.bfloat16)
    plan = WeightPlan((0.3, 0.7))
    merged = merged_weight(NAME, adapters, WeightPlan(made_with), base, torch.bfloat16)
    stacked = stacked_factors(NAME, adapters, WeightPlan(made_with))
    A, B = stacked.A, stacked.B
    whole = base.double().addmm_(*((A.T, B.T) if stacked.transpose else (B, A))).to(torch.bfloat16)
    assert torch.equal(merged, whole)  # rounded by blocks of rows == the whole tensor at once
    fit = FitSums.empty(2)
    result = check_touched(NAME, base, merged, adapters, plan, "linear", MethodParams(), fit)

    deltas = adapter_deltas(NAME, adapters, base)
    intended = intended_delta(NAME, adapters, plan, base)
    change = merged.double() - base.double()
    dense = FitSums.empty(2)
    dense.add(deltas, change)
    assert torch.allclose(fit.gram, dense.gram, rtol=1e-10)
    assert torch.allclose(fit.rhs, dense.rhs, rtol=1e-5)
    assert fit.energy == pytest.approx(dense.energy, rel=1e-6)
    exact = base.double() + intended
    assert fit.noise == pytest.approx(  # x - W' is taken in fp32: 2^-24 |x| per element
        float(((exact.to(torch.bfloat16).double() - exact) ** 2).sum()), rel=1e-5
    )
    norm2 = float((intended * intended).sum())
    assert result.retention == pytest.approx(float((change * intended).sum()) / norm2, rel=1e-5)
    error = float((change - intended).norm()) / norm2**0.5
    assert result.delta_rel_error == pytest.approx(error, rel=1e-6)
    assert result.recovered == pytest.approx(list(made_with), abs=0.01)
    assert (result.max_ulp == 0) == (made_with == (0.3, 0.7))


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("weights", [(0.7,), (0.3, 0.7), (0.9, 0.05, 0.4), (0.0, 0.6)])
def test_factor_sums_equal_dense_sums_at_trained_magnitudes(out_dtype, weights, monkeypatch):
    """Deltas of 1e-3..1e-2 of W's size, which bf16 rounding partly erases: the sums that
    lean on x - W' (one adapter's <d_k, x - W'> comes from a dot, not a projection) still
    match the dense ones, for one, two and three adapters and a weight of 0."""
    monkeypatch.setattr(delta_module, "_BLOCK_BYTES", 8 * 56 * 7)  # several blocks
    generator = torch.Generator().manual_seed(2)
    ranks = (4, 8, 2)[: len(weights)]
    adapters = [
        Adapter(
            Path(f"a{i}"),
            {},
            factors={
                NAME: LoraFactors(
                    "m",
                    torch.randn(r, 56, generator=generator) * 0.05,
                    torch.randn(40, r, generator=generator) * 0.01 * (i + 1),
                    0.5,
                )
            },
        )
        for i, r in enumerate(ranks)
    ]
    base = (torch.randn(40, 56, generator=generator) * 0.5).to(torch.bfloat16)
    plan = WeightPlan(weights)
    merged = merged_weight(NAME, adapters, plan, base, out_dtype)
    fit = FitSums.empty(len(weights))
    result = check_touched(NAME, base, merged, adapters, plan, "linear", MethodParams(), fit)

    deltas = adapter_deltas(NAME, adapters, base)
    intended = intended_delta(NAME, adapters, plan, base)
    change = merged.double() - base.double()
    dense = FitSums.empty(len(weights))
    dense.add(deltas, change)
    scale = float(dense.gram.diagonal().max())  # rhs entries near 0 are judged against it
    assert torch.allclose(fit.rhs, dense.rhs, rtol=1e-4, atol=1e-6 * scale)
    assert fit.energy == pytest.approx(dense.energy, rel=1e-5)
    norm2 = float((intended * intended).sum())
    retention = float((change * intended).sum()) / norm2
    assert result.retention == pytest.approx(retention, rel=1e-4)
    if out_dtype == torch.bfloat16:
        assert retention < 0.95  # the case this test is about: rounding erased part of it
