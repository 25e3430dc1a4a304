"""Each known failure of the usual tools, reproduced, next to medmerge on the same inputs."""

from __future__ import annotations

import peft
import pytest
import torch
from packaging.version import Version
from peft import PeftModel
from transformers import AutoModelForCausalLM

from helpers.factories import make_adapter, peft_reference
from medmerge.lora import intended_delta, load_adapter

Q = "model.layers.0.self_attn.q_proj"


def _true_delta(models_base, adapters, weights, name=Q):
    reference = peft_reference(models_base, list(zip(adapters, weights, strict=True)))
    base = AutoModelForCausalLM.from_pretrained(models_base, dtype=torch.float64).state_dict()[
        f"{name}.weight"
    ]
    return reference[f"{name}.weight"] - base


def _peft_mix(base, adapters, weights, combination):
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a0")
    peft_model.load_adapter(adapters[1], adapter_name="a1")
    peft_model.add_weighted_adapter(
        ["a0", "a1"], list(weights), "mix", combination_type=combination
    )
    return peft_model.base_model.model.get_submodule(Q).get_delta_weight("mix").double()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def same_rank(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("same_rank")
    a = make_adapter(
        models["base"], root / "a", seed=11, r=4, lora_alpha=8, target_modules=["q_proj"]
    )
    b = make_adapter(
        models["base"], root / "b", seed=12, r=4, lora_alpha=8, target_modules=["q_proj"]
    )
    return a, b


def test_peft_linear_mixes_factors_with_cross_terms(models, same_rank):
    weights = (0.3, 0.7)
    truth = _true_delta(models["base"], same_rank, weights)
    peft_error = _rel(_peft_mix(models["base"], same_rank, weights, "linear"), truth)
    ours = intended_delta(f"{Q}.weight", [load_adapter(p) for p in same_rank], weights)
    assert peft_error > 0.5  # B'A' carries B_i A_j cross terms
    assert _rel(ours, truth) < 1e-12


def test_peft_linear_refuses_different_ranks_medmerge_merges_them(models):
    model = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float64)
    peft_model = PeftModel.from_pretrained(model, models["pt"], adapter_name="a0")
    peft_model.load_adapter(models["sft"], adapter_name="a1")
    with pytest.raises(ValueError):
        peft_model.add_weighted_adapter(["a0", "a1"], [0.3, 0.7], "mix", combination_type="linear")
    truth = _true_delta(models["base"], (models["pt"], models["sft"]), (0.3, 0.7))
    ours = intended_delta(
        f"{Q}.weight", [load_adapter(models["pt"]), load_adapter(models["sft"])], (0.3, 0.7)
    )
    assert _rel(ours, truth) < 1e-12


# PEFT 0.22.0 stopped the mixed adapter inheriting use_rslora (huggingface/peft#3449).
PEFT_RESETS_RSLORA = Version(peft.__version__) >= Version("0.22.0")


def test_peft_cat_with_rslora_is_too_large_before_0_22(models, tmp_path):
    a = make_adapter(
        models["base"],
        tmp_path / "a",
        seed=13,
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj"],
    )
    b = make_adapter(
        models["base"],
        tmp_path / "b",
        seed=14,
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj"],
    )
    weights = (0.3, 0.7)
    truth = _true_delta(models["base"], (a, b), weights)
    peft = _peft_mix(models["base"], (a, b), weights, "cat")
    ratio = float(peft.norm() / truth.norm())
    if PEFT_RESETS_RSLORA:
        assert ratio == pytest.approx(1.0, abs=1e-9)
    else:
        # cat folds w_i * s_i into B but the mix keeps use_rslora: alpha/sqrt(8) again
        assert ratio > 1.3
    ours = intended_delta(f"{Q}.weight", [load_adapter(a), load_adapter(b)], weights)
    assert _rel(ours, truth) < 1e-12


def test_published_script_squares_the_weight(models):
    """Scaling both A and B by w gives each adapter w^2; medmerge scales the delta once."""
    adapter = load_adapter(models["pt"])
    factors = adapter.factors[f"{Q}.weight"]
    w = 0.3
    script = (factors.B.double() * w) @ (factors.A.double() * w) * factors.scale
    ours = intended_delta(f"{Q}.weight", [adapter], [w])
    once = factors.weight_delta() * w
    assert torch.allclose(script, once * w, rtol=1e-12)  # w^2
    assert torch.allclose(ours, once, rtol=1e-12, atol=0)
    assert _rel(script, ours) > 0.6


def test_mergekit_style_bf16_weight_is_not_used():
    """A weight cast to bf16 is 0.69921875, not 0.7; medmerge keeps the weight in fp64."""
    assert float(torch.tensor(0.7, dtype=torch.bfloat16)) == 0.69921875
    delta = torch.randn(8, 8, dtype=torch.float64)
    from medmerge.lora.methods import MethodParams, linear

    assert torch.equal(linear([delta], [0.7], MethodParams()), delta * 0.7)
