"""Training reads a dataset folder as LLaMA-Factory keeps it (tests/data/llamafactory_data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from medmerge.train import TrainConfig, train

LF_DATA = Path(__file__).parents[1] / "data" / "llamafactory_data"


def test_sft_trains_on_llamafactorys_identity_and_alpaca_sets(make_cfg):
    cfg = make_cfg(
        "sft", data=[], dataset="identity,alpaca_en_demo", dataset_dir=str(LF_DATA), max_samples=4
    )
    train(cfg)
    manifest = json.loads((Path(cfg.out) / "medmerge_manifest.json").read_text())
    text = json.dumps(manifest)
    assert "identity.json" in text and "alpaca_en_demo.json" in text


def test_pt_trains_on_llamafactorys_c4_set(make_cfg):
    cfg = make_cfg(
        "pt", data=[], dataset="c4_demo", dataset_dir=str(LF_DATA), max_samples=1, max_steps=2
    )
    train(cfg)
    assert (Path(cfg.out) / "adapter_model.safetensors").is_file()


def test_data_or_dataset_one_of_the_two(make_cfg):
    with pytest.raises(ValidationError, match="--data FILE or as --dataset NAME"):
        make_cfg("sft", dataset="identity", dataset_dir=str(LF_DATA))
    with pytest.raises(ValidationError, match="--data FILE or as --dataset NAME"):
        make_cfg("sft", data=[])
    with pytest.raises(ValidationError, match="data"):
        TrainConfig(stage="sft", base="b", out="o")
