"""Small data files and a config factory for training tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medmerge.train import TrainConfig


@pytest.fixture(scope="session")
def pt_file(tmp_path_factory, repo) -> Path:
    """The first 40 bundled abstracts as JSON lines."""
    with open(repo / "data/pt/medical_abstracts.csv", encoding="utf-8", newline="") as handle:
        texts = [row["medical_abstract"] for row in csv.DictReader(handle)][:40]
    path = tmp_path_factory.mktemp("pt") / "abstracts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sft_file(tmp_path_factory, repo) -> Path:
    """The first 48 bundled GenMedGPT records, Alpaca JSON array."""
    records = json.loads((repo / "data/sft_en/genmedgpt_sample.json").read_text(encoding="utf-8"))[
        :48
    ]
    path = tmp_path_factory.mktemp("sft") / "qa.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture
def make_cfg(tiny_base, pt_file, sft_file, tmp_path):
    def make(stage: str = "pt", name: str | None = None, **overrides) -> TrainConfig:
        values = {
            "stage": stage,
            "base": str(tiny_base),
            "data": [str(pt_file if stage == "pt" else sft_file)],
            "out": str(tmp_path / (name or stage)),
            "cutoff_len": 64,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "max_steps": 6,
            "save_steps": 3,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "progress": False,
            "seed": 7,
        }
        values.update(overrides)
        return TrainConfig(**values)

    return make
