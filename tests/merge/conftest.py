"""Session fixtures: one tiny sharded bf16 base and stock-PEFT adapters of different shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _factories import make_adapter, make_base, medmerge_manifest


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """base; pt (r 8, alpha 16, rank/alpha patterns, attention only, medmerge manifest);
    sft (r 4, rsLoRA, attention + MLP, lm_head in modules_to_save)."""
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
