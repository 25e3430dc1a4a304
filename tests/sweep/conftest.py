"""Two random-but-visible PEFT adapters on the tiny base, and small evaluation suites."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from medmerge.manifest import model_identity, write_manifest


def make_adapter(base: Path, folder: Path, seed: int, template: str | None) -> Path:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft_model.save_pretrained(folder)
    write_manifest(
        folder,
        "train",
        {
            "base": model_identity(base),
            "template": template,
            "enable_thinking": False if template else None,
        },
    )
    return folder


@pytest.fixture(scope="session")
def adapters(tiny_base, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return (
        make_adapter(tiny_base, root / "pt", 1, None),
        make_adapter(tiny_base, root / "sft", 2, "qwen3"),
    )


@pytest.fixture(scope="session")
def suites(repo, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("suites")
    rows = [
        json.loads(x) for x in (repo / "data/qa_en/meqsum_sample.jsonl").read_text().splitlines()
    ]
    gen = folder / "gen.jsonl"
    gen.write_text("".join(json.dumps(r) + "\n" for r in rows[200:203]))
    return {
        "gen": [
            {
                "name": "meqsum",
                "data": str(gen),
                "format": "columns",
                "columns": {"prompt": "question", "reference": "summary"},
            }
        ],
        "mcq": [
            {
                "name": "hq",
                "data": [str(repo / "data/mcq_en/dev_HEAD_EN.json")],
                "include_ids": ["Cuaderno_2015_1_M"],
                "limit": 4,
            }
        ],
    }


@pytest.fixture
def sweep_values(tiny_base, adapters, suites, tmp_path) -> dict:
    return {
        "base": str(tiny_base),
        "adapters": [
            {"path": str(adapters[0]), "label": "pt"},
            {"path": str(adapters[1]), "label": "sft"},
        ],
        "grid": {"pt": [0.0, 0.3, 1.0], "sft": "complement"},
        "decodings": {
            "greedy": {"preset": "A", "max_new_tokens": 8},
            "penalty": {"preset": "A", "max_new_tokens": 8, "think_penalty": 5.0},
        },
        "suites": suites,
        "recommend": {"reference": {"pt": 0.0, "sft": 1.0}, "bleu_drop": 100, "max_think": 1.0},
        "out": str(tmp_path / "sweep"),
        "progress": False,
    }
