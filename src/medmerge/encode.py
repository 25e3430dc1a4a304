"""`medmerge encode`: what training sees, one JSON line per SFT example or PT block.

Each line holds the `input_ids` and `labels` the train stage builds (LLaMA-Factory's
supervised or pretrain processor, see data/), the decoded `text`, and `marked`: the same text
with every trained span (label != -100) wrapped in TRAINED_OPEN / TRAINED_CLOSE. SFT lines
also name their record (`source`, file:line). Rows are as LLaMA-Factory's processor makes them:
nothing is dropped or masked beyond what it does (training later also drops examples with no
trained token). The file is written whole or not at all, and an existing one is kept unless
--force.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medmerge.artifacts import atomic_write_text
from medmerge.config import StageConfig
from medmerge.errors import ConfigError

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


class EncodeConfig(StageConfig):
    """`medmerge encode`: tokenize a data file with a template, as training would."""

    path_fields = ("tokenizer", "data", "out", "dataset_dir")

    tokenizer: str = Field(description="model or tokenizer folder")
    template: str = Field(default="qwen3", description="chat template")
    enable_thinking: bool = Field(
        default=True, description="render the reasoning (<think>) part of the template"
    )
    data: str | None = Field(default=None, description="data file")
    dataset: str | None = Field(
        default=None, description="dataset name(s) of --dataset-dir's dataset_info.json"
    )
    dataset_dir: str | None = Field(default=None, description="folder of dataset_info.json")
    max_samples: int | None = Field(default=None, ge=1, description="first N per dataset")
    skip_bad_records: bool = Field(default=False, description="drop and count bad records")
    stage: Literal["sft", "pt"] = Field(default="sft", description="sft examples or pt blocks")
    cutoff_len: int = Field(default=2048, ge=2, description="longest row in tokens")
    data_format: Literal["auto", "alpaca", "sharegpt"] = Field(
        default="auto", description="SFT: the data's layout"
    )
    text_column: str | None = Field(default=None, description="PT: field holding the text")
    packing: bool = Field(default=True, description="PT: pack documents into full blocks")
    keep_remainder: bool = Field(default=False, description="PT: keep the last, short block")
    mask_turn_end_newline: bool = Field(
        default=False, description="SFT: do not train the newline after each reply's end token"
    )
    out: str = Field(description="output .jsonl file")
    force: bool = Field(default=False, description="replace an existing --out file")


def marked_text(tokenizer: Any, input_ids: list[int], labels: list[int]) -> str:
    """The decoded row with each run of trained tokens wrapped in the trained markers."""
    pieces, start = [], 0
    for end in range(1, len(input_ids) + 1):
        if end == len(input_ids) or (labels[end] != -100) != (labels[start] != -100):
            text = tokenizer.decode(input_ids[start:end], skip_special_tokens=False)
            trained = labels[start] != -100
            pieces.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text)
            start = end
    return "".join(pieces)


def _records(cfg: EncodeConfig) -> list:
    """PT texts or SFT conversations of --data, or of the --dataset entries."""
    from medmerge.data import read_pt_texts
    from medmerge.data.lf_datasets import dataset_specs, spec_conversations, spec_texts
    from medmerge.data.readers import read_sft_counted

    if bool(cfg.data) == bool(cfg.dataset):
        raise ConfigError("give the data as --data FILE or as --dataset NAME, one of the two")
    if cfg.data:
        if cfg.stage == "pt":
            found = read_pt_texts(cfg.data, cfg.text_column)
        else:
            found = read_sft_counted(cfg.data, cfg.data_format, None, cfg.skip_bad_records)[0]
        return found[: cfg.max_samples] if cfg.max_samples else found
    records = []
    names = [name.strip() for name in cfg.dataset.split(",") if name.strip()]
    for spec in dataset_specs(names, cfg.dataset_dir or "data"):
        if cfg.stage == "pt":
            records += spec_texts(spec, cfg.max_samples)
        else:
            records += spec_conversations(spec, cfg.max_samples, cfg.skip_bad_records)[0]
    return records


def _sft_rows(cfg: EncodeConfig, tokenizer: Any) -> list[dict]:
    from medmerge.data import get_template, supervised_example
    from medmerge.data.packing import mask_turn_end_newline

    chat = get_template(cfg.template)
    rows = []
    for conversation in _records(cfg):
        pairs = chat.encode_pairs(tokenizer, conversation, cfg.enable_thinking)
        if cfg.mask_turn_end_newline:
            pairs = mask_turn_end_newline(pairs, chat, tokenizer)
        example = supervised_example(pairs, cfg.cutoff_len, chat.efficient_eos_id(tokenizer))
        rows.append({"source": conversation.source, **example})
    return rows


def _pt_rows(cfg: EncodeConfig, tokenizer: Any) -> list[dict]:
    from medmerge.data import build_pt_examples, get_template

    get_template(cfg.template)
    texts = _records(cfg)
    blocks = build_pt_examples(
        texts, tokenizer, cfg.cutoff_len, cfg.template, cfg.packing, cfg.keep_remainder
    )
    return [{"block": index, **block} for index, block in enumerate(blocks)]


def encode_rows(cfg: EncodeConfig, tokenizer: Any) -> list[dict]:
    """The rows of `cfg.data` with their decoded and marked text."""
    rows = _sft_rows(cfg, tokenizer) if cfg.stage == "sft" else _pt_rows(cfg, tokenizer)
    for row in rows:
        row["text"] = tokenizer.decode(row["input_ids"], skip_special_tokens=False)
        row["marked"] = marked_text(tokenizer, row["input_ids"], row["labels"])
    return rows


def _check_out(cfg: EncodeConfig) -> Path:
    out = Path(cfg.out)
    if cfg.data and out.resolve() == Path(cfg.data).resolve():
        raise ConfigError(f"{out}: --out is the --data file; choose another --out")
    if out.is_dir():
        raise ConfigError(f"{out}: --out is a folder; give a .jsonl file path")
    if out.exists() and not cfg.force:
        raise ConfigError(f"{out}: output file exists; choose another --out or pass --force")
    return out


def run_encode(cfg: EncodeConfig) -> int:
    """Write one JSON line per row to `cfg.out`; print where and how many."""
    from medmerge import loading

    out = _check_out(cfg)
    tokenizer = loading.load_tokenizer(cfg.tokenizer)
    rows = encode_rows(cfg, tokenizer)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not out.parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.parent} does not exist; create it first")
    atomic_write_text(out, text)
    trained = sum(sum(1 for label in row["labels"] if label != -100) for row in rows)
    print(
        f"{out}: {len(rows)} {'examples' if cfg.stage == 'sft' else 'blocks'}, {trained} trained tokens"
    )
    return 0
