"""LLaMA-Factory train YAMLs (its own examples, unchanged) translated and trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_one_error
from medmerge.cli import main
from medmerge.config import read_yaml
from medmerge.errors import ConfigError
from medmerge.train.llamafactory import is_llamafactory, translate

EXAMPLES = Path(__file__).parent / "llamafactory_examples"
LF_DATA = Path(__file__).parents[1] / "data" / "llamafactory_data"


def test_sft_example_translates_with_llamafactorys_defaults():
    values = read_yaml(EXAMPLES / "qwen3_lora_sft.yaml")
    assert is_llamafactory(values)
    out = translate(values, "sft", "x.yaml")
    assert out["base"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert out["out"] == "saves/qwen3-4b/lora/sft"
    assert out["dataset"] == "identity,alpaca_en_demo"
    assert out["template"] == "qwen3_nothink"
    assert (out["cutoff_len"], out["max_samples"]) == (2048, 1000)
    assert (out["lora.r"], out["lora.alpha"], out["lora.dropout"]) == (8, 16, 0.0)
    assert out["lora.target_modules"] == "all-linear"
    assert (out["batch_size"], out["gradient_accumulation_steps"]) == (1, 8)
    assert (out["learning_rate"], out["num_epochs"], out["lr_scheduler"]) == (1e-4, 3.0, "cosine")
    assert (out["warmup_ratio"], out["precision"], out["force"]) == (0.1, "bf16", True)
    assert (out["logging_steps"], out["save_steps"], out["trust_remote_code"]) == (10, 500, True)


def test_keys_translate_one_by_one():
    values = {
        "lora_target": "q_proj,v_proj",
        "lora_alpha": 32,
        "max_steps": -1,
        "val_size": 0.1,
        "fp16": False,
        "enable_thinking": False,
        "dataset": ["a", "b"],
    }
    out = translate(values, "pt", "x.yaml")
    assert out["lora.target_modules"] == ["q_proj", "v_proj"]
    assert (out["lora.alpha"], out["val_size"], out["enable_thinking"]) == (32, 0.1, False)
    assert "max_steps" not in out and "precision" not in out
    assert (out["dataset"], out["template"]) == ("a,b", "empty")
    # Left out: LLaMA-Factory's / HF's defaults, not medmerge's.
    assert (out["learning_rate"], out["num_epochs"], out["batch_size"]) == (5e-5, 3.0, 8)
    assert (out["lr_scheduler"], out["cutoff_len"], out["lora.alpha"]) == ("linear", 2048, 32)


def test_every_key_it_cannot_honour_is_refused_at_once():
    values = read_yaml(EXAMPLES / "qwen3_lora_dpo.yaml")
    with pytest.raises(ConfigError) as info:
        translate({**values, "fp16": True, "lr_scheduler_type": "polynomial"}, "sft", "d.yaml")
    message = str(info.value)
    assert "\n" not in message
    for needle in ("stage 'dpo' here, but this is `train sft`", "pref_beta", "pref_loss", "fp16"):
        assert needle in message
    assert "lr_scheduler_type 'polynomial'" in message


@pytest.mark.parametrize(
    ("stage", "example"), [("sft", "qwen3_lora_sft"), ("pt", "qwen3_lora_pretrain")]
)
def test_llamafactory_example_yaml_trains(tiny_base, tmp_path, capsys, stage, example):
    out = tmp_path / "adapter"
    argv = ["train", stage, "--config", str(EXAMPLES / f"{example}.yaml"), "--base", str(tiny_base)]
    argv += ["--out", str(out), "--dataset-dir", str(LF_DATA), "--max-samples", "4"]
    argv += ["--max-steps", "1", "--cutoff-len", "32", "--no-progress"]
    # The YAML's bf16 as such is translated (test_sft_example_translates...); accelerate's
    # state is one per process, so after other tests' fp32 runs this process stays fp32.
    argv += ["--precision", "fp32"]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    err = capsys.readouterr().err
    assert "is a LLaMA-Factory YAML; training with:" in err
    assert "template: qwen3_nothink" in err or stage == "pt"
    manifest = json.loads((out / "medmerge_manifest.json").read_text())
    assert "alpaca_en_demo.json" in json.dumps(manifest) or stage == "pt"


def test_llamafactory_flag_without_config_is_one_line(capsys):
    code = main(["train", "sft", "--llamafactory", "--base", "b", "--data", "d", "--out", "o"])
    assert_one_error(code, capsys.readouterr().err, "--llamafactory needs --config")
