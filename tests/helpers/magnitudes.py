"""Tiny bases with N(0, 0.02) weights and stock-PEFT adapters whose delta has a chosen size
relative to the weight it changes (‖s·B·A‖ / ‖W‖ = ratio per module), as trained adapters
have: 1e-3 to 1e-2 in practice. Built from transformers config classes, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RATIOS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1)


def tiny_config(arch: str, **overrides):
    """A 2-layer config of `arch` (llama, gpt2, gemma3, moe) small enough for a test matrix."""
    import transformers

    if arch == "llama":
        values = dict(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        )
        return transformers.LlamaConfig(**{**values, **overrides})
    if arch == "gpt2":
        values = dict(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=32)
        return transformers.GPT2Config(**{**values, "tie_word_embeddings": False, **overrides})
    if arch == "gemma3":
        values = dict(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=8,
        )
        return transformers.Gemma3TextConfig(**{**values, **overrides})
    if arch == "moe":
        values = dict(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            moe_intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            num_experts=2,
            num_experts_per_tok=1,
            tie_word_embeddings=False,
        )
        return transformers.Qwen3MoeConfig(**{**values, **overrides})
    raise ValueError(f"no tiny config for {arch!r}")


def make_base(folder: Path, arch: str, dtype: str = "bf16", seed: int = 0, **overrides) -> Path:
    """A random `arch` model with weights N(0, 0.02) and 1-D tensors 1 + N(0, 0.05), saved in
    `dtype`; dtype "mixed" saves bf16 matrices beside fp32 1-D tensors (norms, biases) whose
    values bf16 cannot hold, with config.json saying bfloat16."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.02)
            else:
                param.copy_(1.0 + 0.05 * torch.randn_like(param))
    exact = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.to(DTYPES["bf16" if dtype == "mixed" else dtype]).save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64}))
    if dtype == "mixed":
        file = folder / "model.safetensors"
        state = load_file(file)
        for name, tensor in state.items():
            if tensor.dim() == 1 and tensor.is_floating_point():
                state[name] = exact[name].float().contiguous()
        save_file(state, file, {"format": "pt"})
    return folder


def make_adapter(base: Path, folder: Path, ratio: float, seed: int, **lora_kwargs) -> Path:
    """A stock-PEFT LoRA adapter on `base` whose delta on each module has ‖Δ‖/‖W‖ = `ratio`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(init_lora_weights=False, **{"r": 4, "lora_alpha": 8, **lora_kwargs})
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for module in peft_model.modules():
            scaling = getattr(module, "scaling", None)
            if not isinstance(scaling, dict) or "default" not in scaling:
                continue
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight("default")
            factor = module.lora_B if "default" in module.lora_B else module.lora_embedding_B
            target = factor["default"]
            target = getattr(target, "weight", target)
            target.mul_(ratio * float(weight.norm()) / float(delta.norm()))
    peft_model.save_pretrained(folder)
    return folder


TARGETS = {
    "llama": ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
    "gemma3": ["q_proj", "k_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "lm_head"],  # Conv1D and Linear in one adapter
    "moe": ["q_proj", "o_proj"],
}
