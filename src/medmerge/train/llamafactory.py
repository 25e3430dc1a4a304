"""`medmerge train pt|sft --config lf.yaml` with a LLaMA-Factory train YAML, translated.

A YAML is read as LLaMA-Factory's when it has its keys (model_name_or_path, output_dir,
finetuning_type, lora_rank, ...) or with --llamafactory. Each key it sets is translated to
medmerge's; what it leaves out takes LLaMA-Factory's (and HF TrainingArguments') default, not
medmerge's (learning_rate 5e-5, 3 epochs, batch 8, linear schedule, cutoff_len 2048, lora_alpha
= 2 x rank, target all, logging/save every 500 steps). Keys without effect on the adapter
(worker counts, plots, ddp_timeout, report_to: none) are accepted; every key it cannot honour
is refused, all at once, one line each. Paths stay as written: LLaMA-Factory reads them
relative to the working directory. The translated config is printed before training.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from medmerge.config import build_config, read_yaml
from medmerge.errors import ConfigError
from medmerge.train.config import TrainConfig

MARKERS = ("model_name_or_path", "output_dir", "finetuning_type", "lora_rank", "lora_target")
MARKERS += ("per_device_train_batch_size", "num_train_epochs", "do_train")
# LLaMA-Factory / HF TrainingArguments defaults of what medmerge needs, in medmerge's keys.
DEFAULTS = {
    "learning_rate": 5e-5,
    "num_epochs": 3.0,
    "batch_size": 8,
    "lr_scheduler": "linear",
    "cutoff_len": 2048,
    "lora.r": 8,
    "lora.dropout": 0.0,
    "lora.target_modules": "all-linear",
    "logging_steps": 500,
    "save_steps": 500,
    "eval_steps": 500,
    "enable_thinking": True,
}
RENAMED = {
    "model_name_or_path": "base",
    "output_dir": "out",
    "dataset_dir": "dataset_dir",
    "cutoff_len": "cutoff_len",
    "lora_rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "use_rslora": "lora.use_rslora",
    "learning_rate": "learning_rate",
    "num_train_epochs": "num_epochs",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "warmup_ratio": "warmup_ratio",
    "warmup_steps": "warmup_steps",
    "max_samples": "max_samples",
    "enable_thinking": "enable_thinking",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "eval_steps": "eval_steps",
    "seed": "seed",
    "weight_decay": "weight_decay",
    "max_grad_norm": "max_grad_norm",
    "packing": "packing",
    "trust_remote_code": "trust_remote_code",
    "overwrite_output_dir": "force",
}
NO_EFFECT = (
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "plot_loss",
    "save_only_model",
    "ddp_timeout",
    "overwrite_cache",
    "logging_dir",
    "run_name",
    "per_device_eval_batch_size",
    "eval_strategy",
)
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")


def is_llamafactory(values: dict[str, Any]) -> bool:
    return any(key in values for key in MARKERS)


def _special(key: str, value: Any, stage: str, out: dict[str, Any]) -> str | None:
    """Translate one key that is not a plain rename; return a problem or None."""
    if key == "stage":
        return None if value == stage else f"stage {value!r} here, but this is `train {stage}`"
    if key == "finetuning_type":
        return None if value == "lora" else f"finetuning_type {value!r}: only lora is trained"
    if key == "do_train":
        return None if value else "do_train false: medmerge train always trains"
    if key in ("do_eval", "do_predict"):
        return None if not value else f"{key}: evaluate with `medmerge eval` instead"
    if key == "dataset":
        out["dataset"] = ",".join(value) if isinstance(value, list) else str(value)
    elif key == "template":
        if value is not None:
            out["template"] = value
    elif key == "lora_target":
        names = value if isinstance(value, list) else [n.strip() for n in str(value).split(",")]
        out["lora.target_modules"] = "all-linear" if names == ["all"] else names
    elif key == "lr_scheduler_type":
        if value not in SCHEDULERS:
            return f"lr_scheduler_type {value!r}: medmerge has {', '.join(SCHEDULERS)}"
        out["lr_scheduler"] = value
    elif key in ("bf16", "fp16"):
        if key == "fp16" and value:
            return "fp16: medmerge trains in fp32 or bf16; use bf16: true"
        if value:
            out["precision"] = "bf16"
    elif key == "max_steps":
        if value != -1:
            out["max_steps"] = value
    elif key == "val_size":
        out["val_size"] = value
    elif key == "report_to":
        return None if value in ("none", None, []) else f"report_to {value!r}: only none"
    elif key == "resume_from_checkpoint":
        return None if value is None else "resume_from_checkpoint: medmerge resumes by itself"
    elif key == "optim":
        return None if value in ("adamw_torch", "adamw_torch_fused") else f"optim {value!r}"
    else:
        return f"{key}: not supported by medmerge train"
    return None


SPECIAL = ("stage", "finetuning_type", "do_train", "do_eval", "do_predict", "dataset")
SPECIAL += ("template", "lora_target", "lr_scheduler_type", "bf16", "fp16", "max_steps")
SPECIAL += ("val_size", "report_to", "resume_from_checkpoint", "optim")


def translate(values: dict[str, Any], stage: str, source: str) -> dict[str, Any]:
    """medmerge's config values (dotted keys) for an LLaMA-Factory train YAML."""
    out: dict[str, Any] = dict(DEFAULTS)
    problems = []
    for key, value in values.items():
        if key in RENAMED:
            out[RENAMED[key]] = value
        elif key in NO_EFFECT:
            continue
        elif key in SPECIAL:
            problem = _special(key, value, stage, out)
            if problem:
                problems.append(f"{source}: {problem}")
        else:
            problems.append(f"{source}: {key}: not supported by medmerge train; remove it")
    if problems:
        raise ConfigError("; ".join(problems))
    out.setdefault("lora.alpha", 2 * out["lora.r"])  # LLaMA-Factory: lora_alpha = 2 x rank
    if "template" not in out:  # LLaMA-Factory parses the tokenizer's template, else empty
        out["template"] = "empty" if stage == "pt" else "tokenizer"
    return out


def build_train_config(
    config_file: str | None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """build_config for TrainConfig that also reads an LLaMA-Factory train YAML."""
    overrides = dict(overrides or {})
    forced = bool(overrides.pop("llamafactory", None))
    if config_file is None:
        if forced:
            raise ConfigError("--llamafactory needs --config lf.yaml")
        return build_config(TrainConfig, None, overrides)
    values = read_yaml(config_file)
    if not (forced or is_llamafactory(values)):
        return build_config(TrainConfig, config_file, overrides)
    translated = translate(values, overrides.get("stage", ""), str(config_file))
    given = {key: value for key, value in overrides.items() if value is not None}
    cfg = build_config(TrainConfig, None, {**translated, **given})
    shown = cfg.model_dump(exclude_defaults=False)
    print(f"medmerge: {Path(config_file)} is a LLaMA-Factory YAML; training with:", file=sys.stderr)
    print(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), file=sys.stderr)
    return cfg
