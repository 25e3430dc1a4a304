"""Tiny bf16 Qwen3 bases in several shards and stock-PEFT adapters, for merge and verify tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

from helpers import tiny_qwen3_config
from medmerge.manifest import model_identity, write_manifest
from medmerge.merge import MergeConfig, run_merge


def tiny_config(**overrides) -> Qwen3Config:
    sizes = dict(vocab_size=512, hidden_size=64, intermediate_size=128, head_dim=16)
    return tiny_qwen3_config(**{**sizes, **overrides})


def make_base(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random tiny Qwen3 saved in bf16 across several safetensors shards."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(tiny_config(**overrides)).to(torch.bfloat16)
    with torch.no_grad():  # norms of exactly 1 would hide a changed norm weight
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(folder, max_shard_size="100KB")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    assert len(list(folder.glob("*.safetensors"))) > 1
    return folder


def make_adapter(
    base: Path, folder: Path, seed: int, manifest: dict | None = None, **lora_kwargs
) -> Path:
    """A stock-PEFT LoRA adapter with random non-zero factors (init_lora_weights=False)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    config = LoraConfig(init_lora_weights=False, **lora_kwargs)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # PEFT's random init gives deltas ~1e-2; make them clearly visible
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.mul_(3.0)
            if "modules_to_save" in name:  # a trained full copy differs from the base
                param.add_(torch.randn_like(param) * 0.02)
    peft_model.save_pretrained(folder)
    if manifest is not None:
        write_manifest(folder, "train", manifest)
    return folder


def medmerge_manifest(base: Path, template: str = "qwen3", enable_thinking: bool = False) -> dict:
    return {"base": model_identity(base), "template": template, "enable_thinking": enable_thinking}


def merge_models(models: dict, out: Path, pt: float = 0.3, sft: float = 0.7, **fields) -> Path:
    """`run_merge` of the `models` fixture's PT and SFT adapters into `out` (verify off unless
    `fields` turn it on); asserts it succeeded."""
    cfg = MergeConfig(
        base=str(models["base"]),
        out=str(out),
        adapters=[
            {"path": str(models["pt"]), "weight": pt},
            {"path": str(models["sft"]), "weight": sft},
        ],
        **{"verify": False, **fields},
    )
    assert run_merge(cfg) == 0
    return out


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model folder, all shards."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def peft_reference(base: Path, adapters: list[tuple[Path, float]]) -> dict[str, torch.Tensor]:
    """W + sum_i w_i * delta_i in fp64 for every base tensor, with deltas from PEFT's own layers.

    Independent of medmerge's code: PEFT resolves ranks, alphas, rsLoRA, patterns and layouts.
    """
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = [f"a{i}" for i in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, adapters[0][0], adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:], strict=True):
        peft_model.load_adapter(path, adapter_name=name)
    result = {k: v.double().clone() for k, v in original.items()}
    for module_name, module in peft_model.base_model.model.named_modules():
        for name, (_, weight) in zip(names, adapters, strict=True):
            _add_module_delta(result, original, module_name, module, name, weight)
    return result


def _add_module_delta(result, original, module_name, module, name, weight) -> None:
    key = f"{module_name}.weight"
    if hasattr(module, "get_delta_weight") and name in getattr(module, "scaling", {}):
        result[key] += weight * module.get_delta_weight(name).double()
        bias = module.lora_B[name].bias if name in getattr(module, "lora_B", {}) else None
        if bias is not None:
            result[f"{module_name}.bias"] += weight * bias.double() * module.scaling[name]
    copies = getattr(module, "modules_to_save", None)
    if copies is not None and name in copies:
        result[key] += weight * (copies[name].weight.double() - original[key].double())


def ulp_distance(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in units in the last place between two tensors of one float dtype."""
    ints = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}[
        a.dtype
    ]
    ia, ib = a.view(ints).long(), b.view(ints).long()
    # Map the sign-magnitude bit patterns onto a monotone integer line.
    bits = 16 if ints is torch.int16 else 32
    ia = torch.where(ia < 0, -(ia & ((1 << (bits - 1)) - 1)), ia)
    ib = torch.where(ib < 0, -(ib & ((1 << (bits - 1)) - 1)), ib)
    return int((ia - ib).abs().max()) if a.numel() else 0
