"""merge's preflight checks config.json against the base's tensors before writing anything.

Without it a config whose sizes disagree with the weights merges "[verified]" (the merge
reads tensors, not the config) and verify or eval then crash or run reshaped weights.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from medmerge.checkpoints import Checkpoint
from medmerge.cli import main
from medmerge.errors import ModelError


def _error_lines(capsys) -> list[str]:
    lines = capsys.readouterr().err.splitlines()
    return [line for line in lines if line.startswith("medmerge: error:")]


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        (
            "hidden_size",
            128,
            "hidden_size is 128 but model.embed_tokens.weight has shape (512, 64)",
        ),
        (
            "vocab_size",
            1000,
            "vocab_size is 1000 but model.embed_tokens.weight has shape (512, 64)",
        ),
        ("num_hidden_layers", 3, "num_hidden_layers is 3 but the weights hold layers 0..1"),
        (
            "intermediate_size",
            96,
            "intermediate_size is 96 but model.layers.0.mlp.down_proj.weight has shape (64, 128)",
        ),
    ],
)
def test_config_that_disagrees_with_the_tensors_is_refused(
    key, value, needle, models, tmp_path, capsys
):
    base = shutil.copytree(models["base"], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, key: value}))
    out = tmp_path / "merged"
    code = main(
        ["merge", "--base", str(base), "--adapter", f"{models['sft']}=0.5", "--out", str(out)]
    )
    (line,) = _error_lines(capsys)
    assert code == 2 and needle in line and str(base / "config.json") in line
    assert not out.exists() and not list(tmp_path.glob("merged*"))


def test_matching_config_still_merges(models, tmp_path, capsys):
    out = tmp_path / "merged"
    base, adapter = str(models["base"]), f"{models['sft']}=0.5"
    code = main(["merge", "--base", base, "--adapter", adapter, "--out", str(out), "--no-verify"])
    assert code == 0 and (out / "config.json").is_file()


def _saved(model, folder):
    model.save_pretrained(folder)
    return Checkpoint(folder)


def test_other_layouts_pass_and_their_aliases_are_checked(tmp_path):
    """GPT-2 (transformer.h.N, n_embd, tied), Llama, and a MoE whose expert MLPs have another
    width than intermediate_size all pass; GPT-2's n_embd is still checked."""
    from medmerge.lora.fit import check_base_config

    torch.manual_seed(0)
    gpt2 = _saved(
        GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=100, n_positions=16)),
        tmp_path / "gpt2",
    )
    llama = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    moe = Qwen3MoeConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
        num_experts=2, num_experts_per_tok=1, num_hidden_layers=2, mlp_only_layers=[0],
        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
    )  # fmt: skip
    for checkpoint in (
        gpt2,
        _saved(LlamaForCausalLM(llama), tmp_path / "llama"),
        _saved(Qwen3MoeForCausalLM(moe), tmp_path / "moe"),
    ):
        check_base_config(checkpoint)
    config = json.loads((tmp_path / "gpt2/config.json").read_text())
    (tmp_path / "gpt2/config.json").write_text(json.dumps({**config, "n_layer": 2}))
    with pytest.raises(
        ModelError,
        match=r"num_hidden_layers is 2 but the weights hold layers 0\.\.2 \(transformer\.h\.N",
    ):
        check_base_config(Checkpoint(tmp_path / "gpt2"))
    (tmp_path / "gpt2/config.json").write_text(json.dumps({**config, "n_embd": 48}))
    with pytest.raises(ModelError, match=r"hidden_size is 48 but transformer\.wte\.weight"):
        check_base_config(Checkpoint(tmp_path / "gpt2"))
