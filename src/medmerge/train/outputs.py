"""What a finished training run leaves: a PEFT adapter, its manifest, loss log and curve."""

from __future__ import annotations

import shutil
from pathlib import Path

from medmerge.manifest import write_manifest
from medmerge.report.plots import plot_loss_curve, read_jsonl
from medmerge.train.config import TrainConfig


def write_adapter_folder(
    staging: Path,
    model,
    full_state: dict,
    cfg: TrainConfig,
    data,
    base_identity: dict,
    work: Path,
    seconds: float,
) -> None:
    """Save the adapter (stock PEFT format, safetensors) and everything that explains it.

    `full_state` is accelerate's gathered state dict, so an adapter trained under FSDP or
    ZeRO-3 is saved whole rather than as this rank's shard.
    """
    model.save_pretrained(staging, state_dict=full_state, safe_serialization=True)
    log = work / "loss_log.jsonl"
    logged = read_jsonl(log) if log.is_file() else []
    records = [r for r in logged if "loss" in r]
    held_out = [r for r in logged if "eval_loss" in r]
    if logged:
        shutil.copyfile(log, staging / "loss_log.jsonl")
        plot_loss_curve(
            staging / "loss_log.jsonl",
            staging / "loss_curve.png",
            # the final folder's name: `staging` is a temporary sibling renamed into place later
            f"{cfg.stage.upper()} loss — {Path(cfg.out).name}",
        )
    write_manifest(
        staging,
        "train",
        {
            "train_stage": cfg.stage,
            "base": base_identity,
            "template": cfg.template if cfg.stage == "sft" else None,
            "enable_thinking": cfg.enable_thinking if cfg.stage == "sft" else None,
            "data": data.files,
            "examples": len(data.examples),
            "tokens_per_epoch": data.tokens,
            "trained_tokens_per_epoch": data.trained_tokens,
            "config": cfg.model_dump(),
            "steps": records[-1]["step"] if records else 0,
            "loss_first": records[0]["loss"] if records else None,
            "loss_last": records[-1]["loss"] if records else None,
            "held_out_examples": len(data.held_out),
            "eval_loss_first": held_out[0]["eval_loss"] if held_out else None,
            "eval_loss_last": held_out[-1]["eval_loss"] if held_out else None,
            "train_seconds": round(seconds, 2),
        },
    )
