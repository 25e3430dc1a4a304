"""Per-module layout and the adapter shapes PEFT writes that one saved flag cannot describe:
GPT-2 Conv1D + Linear in one adapter, bias="all"/"lora_only", tied embeddings, hub-style
GPT-2 keys, per-expert MoE adapters, target_parameters. Merged against PEFT's own deltas."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import assert_one_error
from helpers.factories import peft_reference, read_state, ulp_distance
from helpers.magnitudes import TARGETS, make_adapter, make_base
from medmerge.cli import main
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify


def _merge(base, adapters, out, *extra) -> int:
    argv = ["merge", "--base", str(base), "--out", str(out), *extra]
    for adapter, weight in adapters:
        argv += ["--adapter", f"{adapter}={weight}"]
    return main(argv)


def _assert_matches_peft(base, adapters, out):
    reference = peft_reference(base, adapters)
    state = read_state(out)
    for name, tensor in state.items():
        assert ulp_distance(tensor, reference[name].to(tensor.dtype)) <= 1, name


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """An untied GPT-2 and an adapter on attn.c_attn, attn/mlp.c_proj (Conv1D) and lm_head
    (Linear): PEFT saves fan_in_fan_out false, the last module's."""
    root = tmp_path_factory.mktemp("gpt2")
    base = make_base(root / "base", "gpt2", "bf16")
    adapter = make_adapter(base, root / "adapter", 1e-2, 1, target_modules=TARGETS["gpt2"])
    assert json.loads((adapter / "adapter_config.json").read_text())["fan_in_fan_out"] is False
    return {"root": root, "base": base, "adapter": adapter}


def test_gpt2_conv1d_and_linear_in_one_adapter(gpt2, capsys):
    out = gpt2["root"] / "out"
    assert _merge(gpt2["base"], [(gpt2["adapter"], 0.6)], out) == 0
    _assert_matches_peft(gpt2["base"], [(gpt2["adapter"], 0.6)], out)
    report = verify(VerifyConfig(base=str(gpt2["base"]), merged=str(out)))
    assert report["verdict"] == "EXACT", report["failures"]
    assert report["tensors_touched"] == 7  # 2 x (c_attn, attn.c_proj, mlp.c_proj) + lm_head


def test_a_transposed_square_module_is_caught(gpt2, tmp_path):
    """B·A written where (B·A)ᵀ belongs on the square attn.c_proj: the bug the one saved flag
    caused, and exactly what a fit to the same wrong layout would call correct."""
    out = gpt2["root"] / "out"
    if not out.exists():
        assert _merge(gpt2["base"], [(gpt2["adapter"], 0.6)], out) == 0
    broken = tmp_path / "transposed"
    broken.mkdir()
    for file in out.iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    state = load_file(broken / "model.safetensors")
    base = load_file(gpt2["base"] / "model.safetensors")
    name = "transformer.h.0.attn.c_proj.weight"
    reference = peft_reference(gpt2["base"], [(gpt2["adapter"], 0.6)])[name]
    delta = reference - base[name].double()  # the intended delta in fp64, PEFT's layout
    state[name] = (base[name].double() + delta.T).to(torch.bfloat16)  # B·A, not (B·A)ᵀ
    save_file(state, broken / "model.safetensors", {"format": "pt"})
    adapters = [{"path": str(gpt2["adapter"]), "weight": 0.6}]
    report = verify(
        VerifyConfig(base=str(gpt2["base"]), merged=str(broken), adapters=adapters, logits=False)
    )
    assert report["verdict"] == "WRONG"
    assert any(f.startswith(f"{name}: transposed module") for f in report["failures"]), report[
        "failures"
    ]


def test_hub_style_gpt2_keys_are_mapped(gpt2, tmp_path):
    """The hub's gpt2 checkpoints say `h.0.attn...` where GPT2LMHeadModel (and so PEFT)
    says `transformer.h.0.attn...`; transformers loads both."""
    hub = tmp_path / "hub"
    hub.mkdir()
    for file in gpt2["base"].iterdir():
        (hub / file.name).write_bytes(file.read_bytes())
    state = load_file(hub / "model.safetensors")
    renamed = {k.removeprefix("transformer."): v for k, v in state.items()}
    save_file(renamed, hub / "model.safetensors", {"format": "pt"})
    out = tmp_path / "out"
    assert _merge(hub, [(gpt2["adapter"], 0.6)], out) == 0
    merged = load_file(out / "model.safetensors")
    assert set(merged) == set(renamed)
    assert not torch.equal(merged["h.0.attn.c_attn.weight"], renamed["h.0.attn.c_attn.weight"])
    report = verify(VerifyConfig(base=str(hub), merged=str(out)))
    assert report["verdict"] == "EXACT" and report["tensors_touched"] == 7, report["failures"]
    assert report["ok"] and "max_abs_diff" in report["behaviour"], report["warnings"]


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_are_merged(tmp_path, bias):
    """bias="all"/"lora_only" saves the trained bias of a wrapped module as
    `q_proj.base_layer.bias`; it moves by w * (b_trained - b) like any full copy."""
    base = make_base(tmp_path / "base", "llama", "bf16", attention_bias=True, mlp_bias=True)
    adapter = make_adapter(base, tmp_path / "a", 1e-2, 1, target_modules=["q_proj"], bias=bias)
    saved = load_file(adapter / "adapter_model.safetensors")
    trained = {k: v for k, v in saved.items() if k.endswith("bias")}
    assert any(k.endswith("q_proj.base_layer.bias") for k in trained)
    for key in trained:  # PEFT saves the biases untrained here; train them a little
        saved[key] = saved[key] + 0.05 * torch.randn_like(saved[key])
    save_file(saved, adapter / "adapter_model.safetensors", {"format": "pt"})
    out = tmp_path / "out"
    assert _merge(base, [(adapter, 0.5)], out) == 0
    base_state, out_state = read_state(base), read_state(out)
    for key, value in saved.items():
        if not key.endswith("bias"):
            continue
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
        want = base_state[name].double() + 0.5 * (value.double() - base_state[name].double())
        assert ulp_distance(out_state[name], want.to(torch.bfloat16)) <= 1, name
    report = verify(VerifyConfig(base=str(base), merged=str(out), logits=False))
    assert report["verdict"] == "EXACT", report["failures"]
    assert report["tensors_touched"] == 2 + len(trained)  # q_proj in two layers + biases


def test_lora_on_a_tied_embedding_is_refused(tmp_path, capsys):
    base = make_base(tmp_path / "base", "gemma3", "bf16")
    assert json.loads((base / "config.json").read_text()).get("tie_word_embeddings", True)
    adapter = make_adapter(base, tmp_path / "a", 1e-2, 1, target_modules=["embed_tokens"])
    code = _merge(base, [(adapter, 0.5)], tmp_path / "out")
    assert_one_error(code, capsys.readouterr().err, "ties to its LM head", "unmerged")
    assert not (tmp_path / "out").exists()


def _per_expert_adapter(folder, experts=2, seed=0):
    """A LoRA saved per expert (`experts.N.gate_proj`), as PEFT wrote them before
    transformers 5 fused the experts in memory; stock PEFT no longer can, so by hand."""
    torch.manual_seed(seed)
    folder.mkdir()
    state = {}
    for layer in (0, 1):
        for expert in range(experts):
            for module, (rows, cols) in (("gate_proj", (16, 32)), ("down_proj", (32, 16))):
                key = f"base_model.model.model.layers.{layer}.mlp.experts.{expert}.{module}"
                state[f"{key}.lora_A.weight"] = torch.randn(2, cols) * 0.1
                state[f"{key}.lora_B.weight"] = torch.randn(rows, 2) * 1e-3
    save_file(state, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "bias": "none",
              "target_modules": ["gate_proj", "down_proj"], "task_type": "CAUSAL_LM"}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_per_expert_moe_adapter_merges_and_verifies(tmp_path, capsys):
    base = make_base(tmp_path / "base", "moe", "bf16")
    assert "model.layers.0.mlp.experts.1.gate_proj.weight" in load_file(
        base / "model.safetensors"
    )  # transformers 5 saves experts per expert, though it fuses them in memory
    adapters = [
        (_per_expert_adapter(tmp_path / f"a{s}", seed=s), w) for s, w in ((1, 0.3), (2, 0.7))
    ]
    out = tmp_path / "out"
    assert _merge(base, adapters, out) == 0
    code = main(["verify", "--base", str(base), "--merged", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err and "EXACT" in err
    record = json.loads((out / "verify.json").read_text())
    assert record["verdict"] == "EXACT" and record["tensors_touched"] == 8
    # the logits too: the per-expert deltas land on their slices of the fused experts
    assert record["ok"] and record["behaviour"]["max_abs_diff"] <= record["behaviour"]["tolerance"]


def test_target_parameters_is_refused_in_one_line(tmp_path, capsys):
    base = make_base(tmp_path / "base", "llama", "bf16")
    adapter = make_adapter(base, tmp_path / "a", 1e-2, 1, target_modules=["q_proj"])
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["target_parameters"] = ["mlp.experts.gate_up_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    code = _merge(base, [(adapter, 0.5)], tmp_path / "out")
    assert_one_error(code, capsys.readouterr().err, "target_parameters")
