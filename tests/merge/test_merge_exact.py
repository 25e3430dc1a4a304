"""The streamed full-checkpoint merge against an fp64 reference built from PEFT's own layers."""

from __future__ import annotations

import json

import pytest
import torch

from helpers.factories import (
    make_adapter,
    make_base,
    merge_models,
    peft_reference,
    read_state,
    ulp_distance,
)
from medmerge.lora import apply_merged_delta, load_adapter, restore_weights
from medmerge.manifest import read_manifest
from medmerge.merge import MergeConfig, run_merge

WEIGHTS = (0.3, 0.7)


@pytest.fixture(scope="module")
def merged(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("merged") / "out"
    return merge_models(models, out, *WEIGHTS, max_shard_size="60KB", verify=True)


@pytest.fixture(scope="module")
def reference(models):
    return peft_reference(models["base"], [(models["pt"], WEIGHTS[0]), (models["sft"], WEIGHTS[1])])


def test_touched_tensors_within_one_ulp_and_others_bit_identical(models, merged, reference):
    base = read_state(models["base"])
    out = read_state(merged)
    assert set(out) == set(base)
    changed = [n for n in base if not torch.equal(reference[n].to(torch.bfloat16), base[n])]
    assert len(changed) == 15 and "lm_head.weight" in changed
    for name, tensor in out.items():
        assert tensor.dtype == torch.bfloat16
        expected = reference[name].to(torch.bfloat16)
        assert ulp_distance(tensor, expected) <= 1, name
        if name not in changed:
            assert torch.equal(tensor, base[name]), name


def test_delta_is_not_washed_out(models, merged, reference):
    """The merged delta matches the reference delta, not just the (dominant) base weights."""
    base = read_state(models["base"])["model.layers.0.self_attn.q_proj.weight"].double()
    got = read_state(merged)["model.layers.0.self_attn.q_proj.weight"].double() - base
    want = reference["model.layers.0.self_attn.q_proj.weight"] - base
    assert (got - want).norm() / want.norm() < 0.02  # bf16 rounding of W + delta only


def test_output_is_a_standard_sharded_folder(models, merged):
    assert (merged / "model.safetensors.index.json").is_file()
    assert len(list(merged.glob("model-*-of-*.safetensors"))) > 1
    for side in (
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        assert (merged / side).is_file(), side
    index = json.loads((merged / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(read_state(models["base"]))
    manifest = read_manifest(merged)
    assert (
        manifest["stage"] == "merge"
        and manifest["method"] == "linear"
        and manifest["dtype"] == "BF16"
    )
    assert [a["weight"] for a in manifest["adapters"]] == list(WEIGHTS)
    assert manifest["adapters"][0]["template"] == "qwen3"
    assert len(manifest["adapters"][0]["adapter_weights_sha256"]) == 64


def test_exported_logits_match_in_memory_merge_and_undo_is_exact(models, merged):
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 200, 17, 3]])
    exported = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.bfloat16)
    before = model(ids).logits
    adapters = [load_adapter(models["pt"]), load_adapter(models["sft"])]
    originals = apply_merged_delta(model, adapters, WEIGHTS)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, exported(ids).logits)
        restore_weights(model, originals)
        assert torch.equal(model(ids).logits, before)
    assert not torch.equal(before, exported(ids).logits)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_other_output_dtypes_round_once(models, reference, tmp_path, dtype):
    out = tmp_path / "out"
    merge_models(models, out, dtype=dtype)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16}[dtype]
    for name, tensor in read_state(out).items():
        assert tensor.dtype == torch_dtype
        assert ulp_distance(tensor, reference[name].to(torch_dtype)) <= 1, name
    assert (
        json.loads((out / "config.json").read_text()).get("dtype")
        == {"fp32": "float32", "fp16": "float16"}[dtype]
    )


def test_fan_in_fan_out_lora_bias_and_embedding(tmp_path):
    base = make_base(tmp_path / "base", seed=3, attention_bias=True)
    biased = make_adapter(
        base,
        tmp_path / "biased",
        seed=4,
        r=3,
        lora_alpha=6,
        target_modules=["q_proj", "o_proj"],
        lora_bias=True,
    )
    embed = make_adapter(
        base,
        tmp_path / "embed",
        seed=5,
        r=2,
        lora_alpha=4,
        target_modules=["embed_tokens", "down_proj"],
    )
    out = tmp_path / "out"
    cfg = MergeConfig(
        base=str(base),
        adapters=[{"path": str(biased), "weight": 0.6}, {"path": str(embed), "weight": 1.5}],
        out=str(out),
        verify=False,
    )
    assert run_merge(cfg) == 0
    reference = peft_reference(base, [(biased, 0.6), (embed, 1.5)])
    base_state = read_state(base)
    out_state = read_state(out)
    for name in ("model.layers.0.self_attn.q_proj.bias", "model.embed_tokens.weight"):
        assert not torch.equal(out_state[name], base_state[name]), name
    for name, tensor in out_state.items():
        assert ulp_distance(tensor, reference[name].to(torch.bfloat16)) <= 1, name


def test_fan_in_fan_out_layout(tmp_path):
    """GPT-2's Conv1D stores W as (in, out); PEFT's fan_in_fan_out adapters transpose the delta."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = tmp_path / "base"
    config = GPT2Config(vocab_size=256, n_positions=64, n_embd=48, n_layer=2, n_head=4)
    GPT2LMHeadModel(config).to(torch.bfloat16).save_pretrained(base, max_shard_size="100KB")
    adapter = make_adapter(
        base,
        tmp_path / "a",
        seed=6,
        r=4,
        lora_alpha=4,
        target_modules=["c_attn"],
        fan_in_fan_out=True,
    )
    out = tmp_path / "out"
    cfg = MergeConfig(
        base=str(base), adapters=[{"path": str(adapter), "weight": 0.4}], out=str(out), verify=False
    )
    assert run_merge(cfg) == 0
    reference = peft_reference(base, [(adapter, 0.4)])
    base_state, out_state = read_state(base), read_state(out)
    assert not torch.equal(
        out_state["transformer.h.0.attn.c_attn.weight"],
        base_state["transformer.h.0.attn.c_attn.weight"],
    )
    for name, tensor in out_state.items():
        assert ulp_distance(tensor, reference[name].to(torch.bfloat16)) <= 1, name
