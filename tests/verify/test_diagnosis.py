"""Diagnosis by re-simulation at realistic delta sizes (bf16, ‖Δ‖/‖W‖ from 1e-4 to 1e-2):
each broken merge is WRONG with its named mistake, merges made by other tools with the right
weights are WEIGHTS RIGHT with the hypothesis that reproduces them; the other tools' merges
are made here with stock PEFT."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.magnitudes import TARGETS, make_adapter, make_base
from medmerge.merge import MergeConfig, run_merge
from medmerge.verify import VerifyConfig, run_verify
from medmerge.verify.run import verify

RATIOS = [
    1e-3,
    pytest.param(1e-4, marks=pytest.mark.slow),
    pytest.param(1e-2, marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=RATIOS, ids=lambda r: f"ratio{r:g}")
def setup(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnosis")
    base = make_base(root / "base", "llama", "bf16")
    adapters = [
        make_adapter(base, root / f"a{s}", request.param, s, target_modules=TARGETS["llama"])
        for s in (1, 2)
    ]
    return {"root": root, "base": base, "adapters": adapters}


def _merge(setup, name, w1, w2):
    out = setup["root"] / name
    if not out.exists():
        adapters = [
            {"path": str(a), "weight": w} for a, w in zip(setup["adapters"], (w1, w2), strict=True)
        ]
        assert (
            run_merge(
                MergeConfig(base=str(setup["base"]), out=str(out), adapters=adapters, verify=False)
            )
            == 0
        )
    return out


def _cfg(setup, merged, **extra):
    adapters = [
        {"path": str(a), "weight": w} for a, w in zip(setup["adapters"], (0.3, 0.7), strict=True)
    ]
    return VerifyConfig(
        base=str(setup["base"]), merged=str(merged), adapters=adapters, logits=False, **extra
    )


def _diagnosed(setup, merged):
    report = verify(_cfg(setup, merged))
    return report["verdict"], " ".join(report["failures"]), " ".join(report["warnings"])


@pytest.mark.parametrize(
    ("weights", "named"),
    [
        ((0.09, 0.49), "adapter scaled twice"),
        ((0.0, 0.7), "adapter missing: a1"),
        ((0.7, 0.3), "weights swapped"),
    ],
    ids=["w_squared", "sft_only", "swapped"],
)
def test_named_mistakes(setup, weights, named):
    verdict, failures, _ = _diagnosed(setup, _merge(setup, "_".join(map(str, weights)), *weights))
    assert verdict == "WRONG" and named in failures, failures


def test_one_touched_tensor_edited_is_a_foreign_change(setup, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(_merge(setup, "good", 0.3, 0.7), edited)
    state = load_file(edited / "model.safetensors")
    name = "model.layers.1.mlp.gate_proj.weight"
    state[name] = state[name] + (1e-4 * torch.randn(state[name].shape)).to(torch.bfloat16)
    save_file(state, edited / "model.safetensors", {"format": "pt"})
    verdict, failures, _ = _diagnosed(setup, edited)
    assert verdict == "WRONG" and f"foreign change: {name}" in failures, failures
    assert "q_proj" not in failures


def test_one_untouched_tensor_edited(setup, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(_merge(setup, "good", 0.3, 0.7), edited)
    state = load_file(edited / "model.safetensors")
    state["model.norm.weight"][5] += 0.25
    save_file(state, edited / "model.safetensors", {"format": "pt"})
    verdict, failures, _ = _diagnosed(setup, edited)
    assert verdict == "WRONG" and "model.norm.weight: changed (1 elements)" in failures, failures


def _peft_model(setup):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(setup["base"], dtype=torch.bfloat16)
    peft_model = PeftModel.from_pretrained(model, setup["adapters"][0], adapter_name="a1")
    peft_model.load_adapter(setup["adapters"][1], adapter_name="a2")
    return peft_model


def test_peft_cat_merge_and_unload_is_weights_right(setup, tmp_path):
    """Stock PEFT: add_weighted_adapter(cat) at the intended weights, merge_and_unload in bf16."""
    peft_model = _peft_model(setup)
    peft_model.add_weighted_adapter(["a1", "a2"], [0.3, 0.7], "cat", combination_type="cat")
    peft_model.set_adapter("cat")
    peft_model.merge_and_unload(adapter_names=["cat"]).save_pretrained(tmp_path / "cat")
    report = verify(_cfg(setup, tmp_path / "cat"))
    assert report["verdict"] in ("EXACT", "WEIGHTS RIGHT, NOT EXACTLY ROUNDED"), report["failures"]
    assert report["ok"]
    if report["verdict"] != "EXACT":
        assert any("rounded twice" in w and "ulp" in w for w in report["warnings"])
        assert run_verify(_cfg(setup, tmp_path / "cat", report=str(tmp_path / "v.json"))) == 0
        strict = _cfg(setup, tmp_path / "cat", report=str(tmp_path / "v.json"), strict=True)
        assert run_verify(strict) == 1


def test_sequential_weight_one_export_is_named(setup, tmp_path):
    """LLaMA-Factory's export: each adapter merged at weight 1, one after another."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(setup["base"], dtype=torch.bfloat16)
    for adapter in setup["adapters"]:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(tmp_path / "sequential")
    verdict, failures, _ = _diagnosed(setup, tmp_path / "sequential")
    assert verdict == "WRONG" and "LLaMA-Factory" in failures, failures
