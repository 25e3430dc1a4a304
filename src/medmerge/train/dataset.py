"""From data files to tokenized training examples: PT packs raw text, SFT masks prompts."""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from medmerge import loading
from medmerge.data import build_pt_examples, build_sft_examples, collate, read_pt_texts
from medmerge.data.lf_datasets import dataset_specs, spec_conversations, spec_texts
from medmerge.data.readers import read_sft_counted
from medmerge.errors import DataError
from medmerge.manifest import sha256_file
from medmerge.train.config import TrainConfig


@dataclass
class TrainingData:
    examples: list[dict[str, list[int]]]
    collate: Callable
    held_out: list[dict[str, list[int]]] = field(default_factory=list)  # val_size examples
    files: list[dict] = field(default_factory=list)  # path, sha256, records
    tokens: int = 0  # non-padding tokens in one epoch
    trained_tokens: int = 0  # tokens with a label (the loss is on these)


def load_tokenizer(cfg: TrainConfig) -> PreTrainedTokenizerBase:
    """The base's tokenizer, after the checks on the base folder that need no weights loaded
    (a causal-LM config, no unrequested remote code, safetensors), so that a base training
    cannot use is refused before anything is written."""
    loading.check_model_folder(Path(cfg.base), trust_remote_code=cfg.trust_remote_code)
    tokenizer = loading.load_tokenizer(cfg.base, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _file_records(cfg: TrainConfig) -> tuple[list, list[dict], int]:
    """Records of the --data files (the first max_samples of each), their provenance, skips."""
    files, records, skipped = [], [], 0
    for item in cfg.data_files():
        if cfg.stage == "pt":
            found = read_pt_texts(item.path, item.text_column)
        else:
            found, bad = read_sft_counted(
                item.path, cfg.data_format, item.columns or None, cfg.skip_bad_records
            )
            skipped += bad
        found = found[: cfg.max_samples] if cfg.max_samples else found
        records.extend(found)
        files.append(
            {
                "path": str(Path(item.path).resolve()),
                "sha256": sha256_file(item.path),
                "records": len(found),
            }
        )
    return records, files, skipped


def _dataset_records(cfg: TrainConfig) -> tuple[list, list[dict], int]:
    """Records of the --dataset entries of dataset_info.json, as LLaMA-Factory reads them."""
    names = [name.strip() for name in (cfg.dataset or "").split(",") if name.strip()]
    files, records, skipped = [], [], 0
    for spec in dataset_specs(names, cfg.dataset_folder()):
        if cfg.stage == "pt":
            found = spec_texts(spec, cfg.max_samples)
        else:
            found, bad = spec_conversations(spec, cfg.max_samples, cfg.skip_bad_records)
            skipped += bad
        records.extend(found)
        files += [
            {"path": str(f.resolve()), "sha256": sha256_file(f), "dataset": spec.name}
            for f in spec.files
        ]
        files[-1]["records"] = len(found)
    return records, files, skipped


def load_training_data(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> TrainingData:
    """Read every data file (or dataset) of the config and build the stage's examples."""
    records, files, skipped = (_dataset_records if cfg.dataset else _file_records)(cfg)
    if skipped:
        print(f"medmerge: skipped {skipped} bad record(s) (--skip-bad-records)", file=sys.stderr)
    texts = records if cfg.stage == "pt" else []
    conversations = records if cfg.stage == "sft" else []
    if cfg.stage == "pt":
        examples = build_pt_examples(
            texts, tokenizer, cfg.cutoff_len, cfg.template, cfg.packing, cfg.keep_remainder
        )
    else:
        examples = build_sft_examples(
            conversations,
            tokenizer,
            cfg.template,
            cfg.enable_thinking,
            cfg.cutoff_len,
            cfg.packing,
            cfg.mask_turn_end_newline,
        )
    if not examples:
        raise DataError(
            f"{', '.join(f['path'] for f in files)}: no training examples (is cutoff_len {cfg.cutoff_len} larger than the data?)"
        )
    held_out: list[dict[str, list[int]]] = []
    # A fraction rounds up as HF's train_test_split (LLaMA-Factory's val_size) does.
    val_count = math.ceil(cfg.val_size * len(examples)) if cfg.val_size < 1 else int(cfg.val_size)
    if val_count:
        if val_count >= len(examples):
            raise DataError(
                f"val_size {cfg.val_size:g} leaves no training examples (there are {len(examples)}); lower it"
            )
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(cfg.seed)
        ).tolist()
        held_out = [examples[i] for i in order[:val_count]]
        examples = [examples[i] for i in sorted(order[val_count:])]
    return TrainingData(
        examples=examples,
        held_out=held_out,
        collate=functools.partial(collate, pad_token_id=tokenizer.pad_token_id),
        files=files,
        tokens=sum(len(e["input_ids"]) for e in examples),
        trained_tokens=sum(sum(1 for x in e["labels"] if x != -100) for e in examples),
    )
