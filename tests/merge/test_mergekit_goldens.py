"""ties / dare_ties / magnitude_prune / linear against mergekit's own outputs, with unequal
weights (goldens from scripts/goldens/mergekit_methods.py, mergekit 0.1.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medmerge.lora.methods import METHODS, MethodParams, keep_largest

GOLDENS = json.loads(
    (Path(__file__).parents[1] / "goldens" / "mergekit" / "methods.json").read_text()
)
OURS = {"ties": "ties", "dare_ties": "dare_ties", "task_arithmetic": "linear"}


@pytest.mark.parametrize(
    "case",
    GOLDENS["cases"],
    ids=lambda c: f"{c['method']}-w{'_'.join(map(str, c['weights']))}-d{c['density']}",
)
def test_method_equals_mergekit(case):
    deltas = [torch.tensor(d, dtype=torch.float64) for d in case["deltas"]]
    got = METHODS[OURS[case["method"]]](
        deltas, case["weights"], MethodParams(density=case["density"])
    )
    want = torch.tensor(case["merged"], dtype=torch.float64)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-15), (got - want).abs().max()


def test_magnitude_sparsification_equals_mergekit():
    record = GOLDENS["magnitude"]
    delta = torch.tensor(record["delta"], dtype=torch.float64)
    want = torch.tensor(record["kept"], dtype=torch.float64)
    assert torch.equal(keep_largest(delta, record["density"]), want)
