"""Fixtures every test folder may use: the repo paths and a tiny medmerge base model."""

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
