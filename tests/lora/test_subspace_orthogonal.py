"""The geometry-aware merge equals its formula (an independent numpy computation), leaves the
protected adapter's output subspace to it alone, and a merge made with it verifies EXACT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.magnitudes import TARGETS, make_adapter, make_base
from medmerge.lora.methods import METHODS, MethodParams, linear
from medmerge.merge import MergeConfig, run_merge


def low_rank(rng, rank, shape=(24, 16)):
    return rng.normal(size=(shape[0], rank)) @ rng.normal(size=(rank, shape[1]))


def test_the_merge_equals_its_formula_and_is_orthogonal_to_the_protected_subspace():
    rng = np.random.default_rng(0)
    pt, sft = low_rank(rng, 4), low_rank(rng, 2)
    params = MethodParams(owners=(0, 1), adapters=2)
    merged = METHODS["subspace_orthogonal"](
        [torch.tensor(pt), torch.tensor(sft)], [0.3, 0.7], params
    ).numpy()
    basis, _ = np.linalg.qr(sft @ rng.normal(size=(16, 2)))  # the SFT delta's column space
    expected = 0.7 * sft + 0.3 * (pt - basis @ (basis.T @ pt))
    np.testing.assert_allclose(merged, expected, rtol=0, atol=1e-12)
    assert np.abs(basis.T @ (merged - 0.7 * sft)).max() < 1e-12
    assert np.linalg.matrix_rank(merged - 0.7 * sft) == 4  # PT keeps its rank


def test_without_the_protected_adapter_or_a_matrix_it_is_the_linear_merge():
    rng = np.random.default_rng(1)
    pt = torch.tensor(low_rank(rng, 3))
    only_pt = MethodParams(owners=(0,), adapters=2)
    method = METHODS["subspace_orthogonal"]
    assert torch.equal(method([pt], [0.3], only_pt), linear([pt], [0.3], only_pt))
    bias = [torch.tensor(rng.normal(size=5)), torch.tensor(rng.normal(size=5))]
    both = MethodParams(owners=(0, 1), adapters=2)
    assert torch.equal(method(bias, [0.3, 0.7], both), linear(bias, [0.3, 0.7], both))


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_a_subspace_orthogonal_merge_verifies_exact(tmp_path, dtype):
    base = make_base(tmp_path / "base", "llama", dtype)
    adapters = [
        make_adapter(base, tmp_path / f"a{s}", 3e-3, s, target_modules=TARGETS["llama"])
        for s in (1, 2)
    ]
    cfg = MergeConfig(
        base=str(base),
        out=str(tmp_path / "out"),
        adapters=[{"path": str(a), "weight": w} for a, w in zip(adapters, (0.3, 0.7), strict=True)],
        method="subspace_orthogonal",
    )
    assert run_merge(cfg) == 0
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert report["verdict"] == "EXACT" and report["max_ulp_error"] <= 1, report["failures"]
