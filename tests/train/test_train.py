"""The shared PT/SFT loop: learning, determinism, resume, stock-PEFT compatibility."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from medmerge.manifest import read_manifest, sha256_file
from medmerge.train import loop, train


def _losses(folder) -> list[float]:
    records = [json.loads(line) for line in (folder / "loss_log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _abstract_start() -> str:
    """The first 300 characters of the first bundled abstract: two 64-token blocks."""
    import csv
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data/pt/medical_abstracts.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        return next(csv.DictReader(handle))["medical_abstract"][:300]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize("stage", ["pt", "sft"])
def test_loss_falls(make_cfg, stage, tmp_path):
    # One batch's worth of records seen again and again: the adapter must learn them.
    short_text = tmp_path / "short.jsonl"
    short_text.write_text(json.dumps({"text": _abstract_start()}) + "\n", encoding="utf-8")
    cfg = make_cfg(
        stage,
        **({"data": [str(short_text)]} if stage == "pt" else {"max_samples": 4}),
        batch_size=8,
        max_steps=30,
        save_steps=100,
        learning_rate=3e-2,
        lora={"r": 8, "alpha": 16},
    )
    result = train(cfg)
    losses = _losses(result.out)
    assert len(losses) == 30
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.1, losses
    assert losses[-1] < min(losses[:5]), losses


def test_adapter_folder_is_stock_peft_with_manifest(make_cfg, tiny_base, pt_file):
    result = train(make_cfg("pt"))
    out = result.out
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "loss_log.jsonl",
        "loss_curve.png",
    ):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest["train_stage"] == "pt"
    assert manifest["base"]["path"] == str(tiny_base.resolve())
    assert manifest["data"][0]["sha256"] == sha256_file(pt_file)
    assert manifest["config"]["lora"]["r"] == 4
    assert manifest["steps"] == 6
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])
    assert not (out.parent / f"{out.name}.partial").exists()

    # Stock PEFT loads it and gives the logits of the model the loop trained.
    ids = torch.tensor([[5, 17, 200, 33, 8, 91, 400, 12]])
    with torch.no_grad():
        ours = result.model(input_ids=ids).logits
        stock = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_base), out
        ).eval()
        theirs = stock(input_ids=ids).logits
    assert torch.equal(ours, theirs)
    lora_b = [p for n, p in stock.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "training left lora_B at its zero init"


def test_sft_manifest_records_template(make_cfg):
    result = train(make_cfg("sft", template="qwen3", enable_thinking=False))
    manifest = read_manifest(result.out)
    assert (manifest["template"], manifest["enable_thinking"]) == ("qwen3", False)
    assert 0 < manifest["trained_tokens_per_epoch"] < manifest["tokens_per_epoch"]


def test_same_seed_gives_identical_bytes(make_cfg):
    first = train(make_cfg("pt", name="a")).out
    second = train(make_cfg("pt", name="b")).out
    other_seed = train(make_cfg("pt", name="c", seed=8)).out
    weights = "adapter_model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    assert (first / weights).read_bytes() != (other_seed / weights).read_bytes()


def test_interrupted_run_resumes_to_the_same_adapter(make_cfg, monkeypatch):
    reference = train(make_cfg("pt", name="straight", gradient_accumulation_steps=2)).out
    cfg = make_cfg("pt", name="resumed", gradient_accumulation_steps=2)
    real_after_step = loop.after_step

    def crash_after_step_4(cfg_, state, *args):
        real_after_step(cfg_, state, *args)
        if state.step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "after_step", crash_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    partial = loop.checkpoint.partial_dir(cfg.out)
    assert (partial / "step-3" / "complete").is_file()
    assert not (partial.parent / "resumed").exists(), "an interrupted run must not look finished"
    monkeypatch.setattr(loop, "after_step", real_after_step)
    resumed = train(cfg).out
    weights = "adapter_model.safetensors"
    assert (resumed / weights).read_bytes() == (reference / weights).read_bytes()
    assert _losses(resumed) == _losses(reference)
    assert not partial.exists()


def test_existing_output_is_refused_then_replaced_with_force(make_cfg):
    from medmerge.errors import MedmergeError

    first = train(make_cfg("pt")).out
    before = (first / "adapter_model.safetensors").read_bytes()
    with pytest.raises(MedmergeError, match="--force"):
        train(make_cfg("pt", seed=9))
    assert (first / "adapter_model.safetensors").read_bytes() == before
    train(make_cfg("pt", seed=9, force=True))
    assert (first / "adapter_model.safetensors").read_bytes() != before


def test_held_out_loss_is_logged_and_kept_out_of_training(make_cfg):
    result = train(make_cfg("pt", val_size=8, eval_steps=3, max_steps=6))
    records = [
        json.loads(line) for line in (result.out / "loss_log.jsonl").read_text().splitlines()
    ]
    held_out = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in held_out] == [3, 6]
    manifest = read_manifest(result.out)
    assert manifest["held_out_examples"] == 8
    assert manifest["eval_loss_last"] == held_out[-1]["eval_loss"]
    full = train(make_cfg("pt", name="all", max_steps=6))
    assert read_manifest(full.out)["examples"] == manifest["examples"] + 8
