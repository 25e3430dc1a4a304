"""The behaviour check's tolerance comes from the merge itself: the logits gap between the
exact fp32 merge and its rounding to the checkpoint dtype; a flipped near-tie is no failure."""

from __future__ import annotations

import pytest
import torch

from helpers.magnitudes import TARGETS, make_adapter, make_base
from medmerge.merge import MergeConfig, run_merge
from medmerge.verify import VerifyConfig
from medmerge.verify.behaviour import _judged, behaviour_failure
from medmerge.verify.run import verify


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("behaviour")
    base = make_base(root / "base", "llama", "bf16")
    adapters = [
        make_adapter(base, root / f"a{s}", 1e-1, s, target_modules=TARGETS["llama"]) for s in (1, 2)
    ]
    return {"root": root, "base": base, "adapters": adapters}


def _merge(setup, name, weights):
    out = setup["root"] / name
    adapters = [
        {"path": str(a), "weight": w} for a, w in zip(setup["adapters"], weights, strict=True)
    ]
    assert (
        run_merge(
            MergeConfig(base=str(setup["base"]), out=str(out), adapters=adapters, verify=False)
        )
        == 0
    )
    return out


def _verify(setup, merged):
    adapters = [
        {"path": str(a), "weight": w} for a, w in zip(setup["adapters"], (0.3, 0.7), strict=True)
    ]
    return verify(VerifyConfig(base=str(setup["base"]), merged=str(merged), adapters=adapters))


def test_correct_merge_is_within_the_calibrated_tolerance(setup):
    report = _verify(setup, _merge(setup, "good", (0.3, 0.7)))
    behaviour = report["behaviour"]
    assert report["ok"] and behaviour_failure(behaviour) is None, report["failures"]
    assert behaviour["dtype"] == "bfloat16" and behaviour["rounding_gap"] > 0
    assert behaviour["tolerance"] >= 2 * behaviour["rounding_gap"]
    assert behaviour["max_abs_diff"] < 1e-4 * behaviour["tolerance"]  # same weights, fp32 runs


def test_wrong_weights_fail_the_behaviour_check_too(setup):
    report = _verify(setup, _merge(setup, "swapped", (0.7, 0.3)))
    (line,) = [f for f in report["failures"] if f.startswith("behaviour:")]
    assert (
        "rounding to bfloat16 explains" in line
        and report["behaviour"]["max_abs_diff"] > (report["behaviour"]["tolerance"])
    )


def test_a_flipped_near_tie_is_not_a_failure():
    rounded = torch.tensor([[[1.0, 0.99999, 0.0], [2.0, 0.0, 0.0]]], dtype=torch.float64)
    exact = rounded + 1e-4  # a rounding gap of 1e-4 (tolerance 2e-4)
    near_tie = rounded.clone()
    near_tie[0, 0, 1] = 1.00001  # the top-1 flips inside the tolerance
    record = _judged(near_tie, rounded, exact, torch.bfloat16)
    assert record["top1_agreement"] == 0.5 and record["near_ties"] == 1
    assert record["top1_flips_outside_ties"] == 0 and behaviour_failure(record) is None
    decided = rounded.clone()
    decided[0, 1, 2] = 2.0001  # a decided token flips, by less than the tolerance in logits
    record = _judged(decided, rounded, exact, torch.bfloat16)
    assert record["top1_flips_outside_ties"] == 1 and "1 flips" in behaviour_failure(record)
