"""The merged adapter: one stock-PEFT adapter whose delta is exactly sum_i w_i * s_i * B_i @ A_i."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from helpers.factories import merge_models, peft_reference


def _export(models, out, rank=None, export="adapter"):
    merge_models(models, out, export=export, adapter_rank=rank, verify=export != "adapter")
    return out if export == "adapter" else out / "merged_adapter"


def _loaded_weights(models, adapter_dir):
    """Merge the exported adapter with stock PEFT in fp64 and return the weights."""
    model = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float64)
    return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().state_dict()


@pytest.fixture(scope="module")
def reference(models):
    return peft_reference(models["base"], [(models["pt"], 0.3), (models["sft"], 0.7)])


@pytest.mark.parametrize("rank", [None, "auto"])
def test_effective_delta_is_exact(models, reference, tmp_path, rank):
    folder = _export(models, tmp_path / "out", rank)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert (
        not config["use_rslora"] and not config["use_dora"] and config["lora_alpha"] == config["r"]
    )
    base = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.float64).state_dict()
    merged = _loaded_weights(models, folder)
    for name, want in reference.items():
        if "lm_head" in name:  # a full copy stored in the base dtype: exact to bf16 rounding
            assert torch.equal(merged[name], want.to(torch.bfloat16).double())
            continue
        want_delta, got_delta = want - base[name], merged[name] - base[name]
        if want_delta.abs().max() == 0:
            assert got_delta.abs().max() == 0, name
        else:
            assert float((got_delta - want_delta).norm() / want_delta.norm()) < 1e-5, name
    if rank is None:
        assert config["r"] == 8 + 4  # q_proj of layer 0: r_pt + r_sft
    else:
        assert config["r"] <= 12


def test_truncation_reports_dropped_energy(models, tmp_path):
    _export(models, tmp_path / "out", rank=2)
    manifest = json.loads((tmp_path / "out" / "medmerge_manifest.json").read_text())
    report = manifest["outputs"]["adapter"]
    assert report["rank"] == 2 and 0 < report["max_dropped_energy"] < 1


def test_both_exports(models, tmp_path):
    folder = _export(models, tmp_path / "out", export="both")
    assert (folder / "adapter_config.json").is_file() and (
        tmp_path / "out" / "config.json"
    ).is_file()
