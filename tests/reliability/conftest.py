"""A tiny base and two trained adapters (the CLI runner is helpers.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmerge.train import TrainConfig, train


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory, repo) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability")
    texts = root / "texts.jsonl"
    texts.write_text(
        "".join(json.dumps({"text": f"Fever and cough, case {i}. " * 8}) + "\n" for i in range(12))
    )
    common = {
        "base": str(tiny_base),
        "cutoff_len": 32,
        "batch_size": 4,
        "max_steps": 2,
        "progress": False,
    }
    pt = train(TrainConfig(stage="pt", data=[str(texts)], out=str(root / "pt"), **common)).out
    sft_data = str(repo / "data/sft_en/genmedgpt_sample.json")
    sft = train(
        TrainConfig(
            stage="sft",
            data=[sft_data],
            out=str(root / "sft"),
            max_samples=8,
            enable_thinking=False,
            **common,
        )
    ).out
    return {"pt": pt, "sft": sft, "texts": texts}
