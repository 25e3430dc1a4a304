"""Fixtures every test folder may use: the repo paths, a tiny medmerge base model, and a tiny
sharded bf16 base with stock-PEFT adapters (`models`, for merge and verify)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A 2-layer medmerge base (hidden 32, 1024-token BPE), built as `medmerge base build` does."""
    from medmerge.base import BaseBuildConfig, build_base

    out = tmp_path_factory.mktemp("tiny") / "base"
    cfg = BaseBuildConfig(
        out=str(out),
        vocab_size=1024,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        pretrain_steps=60,
        batch_size=8,
        seq_len=64,
        learning_rate=1e-2,
    )
    return build_base(cfg)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """base; pt (r 8, alpha 16, rank/alpha patterns, attention only, medmerge manifest);
    sft (r 4, rsLoRA, attention + MLP, lm_head in modules_to_save)."""
    from helpers.factories import make_adapter, make_base, medmerge_manifest

    root = tmp_path_factory.mktemp("models")
    base = make_base(root / "base")
    pt = make_adapter(
        base,
        root / "pt",
        seed=1,
        manifest=medmerge_manifest(base, template="qwen3", enable_thinking=False),
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        rank_pattern={"model.layers.1.self_attn.q_proj": 2},
        alpha_pattern={"k_proj": 3},
    )
    sft = make_adapter(
        base,
        root / "sft",
        seed=2,
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"],
        modules_to_save=["lm_head"],
    )
    return {"root": root, "base": base, "pt": pt, "sft": sft}
