"""Every architecture entry finds the layers and groups of its real checkpoint keys.

Each case builds a tiny model of that family with transformers, saves it, and reads the
saved tensor names back, so the table is checked against what transformers really writes.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from medmerge.architectures import ARCHITECTURES, GENERIC, architecture_of
from medmerge.checkpoints import Checkpoint

_SIZES = dict(
    num_hidden_layers=2,
    hidden_size=16,
    intermediate_size=32,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    vocab_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=1,
)
_MOE = dict(num_local_experts=2, num_experts_per_tok=1)
CASES = {
    "qwen2": (transformers.Qwen2Config, {}),
    "qwen3": (transformers.Qwen3Config, {}),
    "llama": (transformers.LlamaConfig, {}),
    "mistral": (transformers.MistralConfig, {}),
    "gemma2": (transformers.Gemma2Config, {}),
    "gemma3_text": (transformers.Gemma3TextConfig, {}),
    "phi3": (transformers.Phi3Config, {}),
    "qwen2_moe": (
        transformers.Qwen2MoeConfig,
        dict(num_experts=2, moe_intermediate_size=8, shared_expert_intermediate_size=8),
    ),
    "mixtral": (transformers.MixtralConfig, _MOE),
}
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn")
MLP = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "c_fc", "experts", "shared_expert")


def _saved(tmp_path, model_type: str) -> Checkpoint:
    if model_type == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64)
    else:
        cls, extra = CASES[model_type]
        config = cls(**_SIZES, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path / model_type)
    return Checkpoint(tmp_path / model_type)


@pytest.mark.parametrize("model_type", [*CASES, "gpt2"])
def test_layers_and_groups_of_real_checkpoint_keys(tmp_path, model_type):
    base = _saved(tmp_path, model_type)
    architecture = architecture_of(base.config)
    assert architecture is ARCHITECTURES[model_type]
    names = list(base.entries)
    assert {architecture.layer_of(n) for n in names} - {None} == {0, 1}
    for name in names:
        group = architecture.group_of(name)
        parts = set(name.split("."))
        if parts & set(ATTENTION) and "mlp" not in parts:
            assert group == "attention", name
        elif parts & set(MLP):
            assert group == "mlp", name
        if architecture.layer_of(name) is None:
            assert group is None, name
    groups = {architecture.group_of(n) for n in names}
    assert {"attention", "mlp"} <= groups


def test_gpt2_keys_with_and_without_transformer_prefix_and_conv1d():
    gpt2 = ARCHITECTURES["gpt2"]
    for prefix in ("transformer.", ""):
        assert gpt2.layer_of(f"{prefix}h.3.attn.c_attn.weight") == 3
        assert gpt2.group_of(f"{prefix}h.3.attn.c_proj.weight") == "attention"
        assert gpt2.group_of(f"{prefix}h.3.mlp.c_proj.weight") == "mlp"
    assert gpt2.is_conv1d("transformer.h.0.mlp.c_fc.weight")
    assert not ARCHITECTURES["llama"].is_conv1d("model.layers.0.mlp.down_proj.weight")
    assert gpt2.layer_of("transformer.wte.weight") is None


def test_tied_embeddings_rule_and_generic_fallback():
    assert ARCHITECTURES["gpt2"].ties_embeddings({"model_type": "gpt2"})
    assert not ARCHITECTURES["gpt2"].ties_embeddings({"tie_word_embeddings": False})
    assert not ARCHITECTURES["qwen3"].ties_embeddings({"model_type": "qwen3"})
    assert ARCHITECTURES["gemma2"].ties_embeddings({})
    unknown = architecture_of({"model_type": "someday"})
    assert unknown is GENERIC
    assert unknown.layer_of("backbone.blocks.4.attn.qkv.weight") == 4
    assert unknown.group_of("model.layers.2.mlp.down_proj.weight") == "mlp"
    text = architecture_of({"model_type": "vision-wrapper", "text_config": {"model_type": "qwen3"}})
    assert text is ARCHITECTURES["qwen3"]
