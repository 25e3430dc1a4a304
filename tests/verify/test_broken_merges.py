"""A suite of broken merges, each caught with the right diagnosis; a correct merge passes."""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.factories import make_adapter, merge_models
from medmerge.cli import main  # noqa: F401
from medmerge.merge import MergeConfig, run_merge
from medmerge.verify import VerifyConfig, check_template, run_verify
from medmerge.verify import run as verify_run
from medmerge.verify.run import verify


def _verify(models, merged, pt=0.3, sft=0.7, **extra):
    return verify(
        VerifyConfig(
            base=str(models["base"]),
            merged=str(merged),
            logits=False,
            adapters=[
                {"path": str(models["pt"]), "weight": pt},
                {"path": str(models["sft"]), "weight": sft},
            ],
            **extra,
        )
    )


@pytest.fixture(scope="module")
def good(models, tmp_path_factory):
    return merge_models(models, tmp_path_factory.mktemp("good") / "out")


def test_correct_merge_passes_and_recovers_weights(models, good):
    report = verify(
        VerifyConfig(base=str(models["base"]), merged=str(good))
    )  # adapters from the manifest
    assert report["ok"], report["failures"]
    assert report["max_ulp_error"] <= 1 and report["tensors_checked"] == 25
    for adapter, truth in zip(report["adapters"], (0.3, 0.7), strict=True):
        assert abs(adapter["recovered_weight"] - truth) < 0.01
    assert report["behaviour"]["top1_agreement"] == 1.0


def test_cli_exit_codes(models, good, tmp_path):
    cfg = VerifyConfig(
        base=str(models["base"]), merged=str(good), logits=False, report=str(tmp_path / "v.json")
    )
    assert run_verify(cfg) == 0
    assert json.loads((tmp_path / "v.json").read_text())["ok"] is True
    stale = VerifyConfig(
        base=str(models["base"]),
        merged=str(good),
        logits=False,
        report=str(tmp_path / "v.json"),
        adapters=[
            {"path": str(models["pt"]), "weight": 0.5},
            {"path": str(models["sft"]), "weight": 0.5},
        ],
    )
    assert run_verify(stale) == 1


def test_scaled_twice(models, good, tmp_path):
    merged = merge_models(models, tmp_path / "w2", pt=0.09, sft=0.49)
    failures = " ".join(_verify(models, merged)["failures"])
    assert "scaled twice" in failures and "0.09" in failures


def test_sft_only(models, tmp_path):
    merged = merge_models(models, tmp_path / "sft_only", pt=0.0, sft=0.7)
    report = _verify(models, merged)
    assert any("adapter missing: pt" in f for f in report["failures"])
    assert abs(report["adapters"][0]["recovered_weight"]) < 0.01


def test_swapped_weights(models, tmp_path):
    merged = merge_models(models, tmp_path / "swapped", pt=0.7, sft=0.3)
    assert any("weights swapped" in f for f in _verify(models, merged)["failures"])


def test_foreign_adapter(models, tmp_path):
    other = make_adapter(
        models["base"],
        tmp_path / "other",
        seed=99,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
    )
    cfg = MergeConfig(
        base=str(models["base"]),
        out=str(tmp_path / "foreign"),
        verify=False,
        adapters=[{"path": str(other), "weight": 0.3}, {"path": str(models["sft"]), "weight": 0.7}],
    )
    assert run_merge(cfg) == 0
    assert any("foreign change" in f for f in _verify(models, tmp_path / "foreign")["failures"])


def test_stale_folder_from_earlier_run(models, good, tmp_path):
    """Weights files from a 0.5/0.5 run under a manifest that says 0.3/0.7."""
    stale = tmp_path / "stale"
    shutil.copytree(good, stale)
    other = merge_models(models, tmp_path / "other", pt=0.5, sft=0.5)
    for file in other.glob("*.safetensors"):
        shutil.copy(file, stale / file.name)
    failures = verify(VerifyConfig(base=str(models["base"]), merged=str(stale), logits=False))[
        "failures"
    ]
    assert any("folder overwritten" in f for f in failures)
    assert any("wrong weight" in f for f in failures)


def test_one_norm_weight_modified(models, good, tmp_path):
    broken = tmp_path / "norm"
    shutil.copytree(good, broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    file = broken / index["weight_map"]["model.norm.weight"]  # the base's shards are kept
    state = load_file(file)
    state["model.norm.weight"][3] += 0.5
    save_file(state, file, {"format": "pt"})
    failures = _verify(models, broken)["failures"]
    assert any(f.startswith("model.norm.weight: changed") for f in failures)


def test_bf16_erasure_of_a_small_delta_is_exact_with_a_warning(models, tmp_path):
    """bf16 rounds most of a 1e-4-weighted delta away: that is the exact bf16 merge (EXACT,
    no failure), with a warning that names the retained share and the fix."""
    merged = merge_models(models, tmp_path / "tiny", pt=1e-4, sft=1e-4)
    report = _verify(models, merged, pt=1e-4, sft=1e-4)
    assert report["ok"] and report["verdict"] == "EXACT", report["failures"]
    assert report["min_retention"] < 0.5
    (warning,) = [w for w in report["warnings"] if "retain" in w]
    assert "--dtype fp32" in warning and "unmerged" in warning and "%" in warning
    fp32 = merge_models(models, tmp_path / "tiny32", pt=1e-4, sft=1e-4, dtype="fp32")
    report = _verify(models, fp32, pt=1e-4, sft=1e-4)
    assert report["ok"] and report["verdict"] == "EXACT"
    assert not [w for w in report["warnings"] if "retain" in w]


def test_peft_merge_and_unload_with_different_ranks_and_rslora(models, tmp_path):
    """A merge made by another tool: PEFT applying each adapter at its weight, rounding in bf16."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models["base"], dtype=torch.bfloat16)
    peft_model = PeftModel.from_pretrained(model, models["pt"], adapter_name="pt")
    peft_model.load_adapter(models["sft"], adapter_name="sft")
    for name, weight in (("pt", 0.3), ("sft", 0.7)):
        for module in peft_model.modules():
            if isinstance(getattr(module, "scaling", None), dict) and name in module.scaling:
                module.scaling[name] *= weight
    merged = peft_model.merge_and_unload(adapter_names=["pt", "sft"])
    merged.save_pretrained(tmp_path / "peft")
    report = _verify(models, tmp_path / "peft")
    for adapter, truth in zip(report["adapters"], (0.3, 0.7), strict=True):
        assert abs(adapter["recovered_weight"] - truth) < 0.01
    # modules_to_save is taken whole by PEFT (weight 1, not 0.7): verify names lm_head.
    assert any("lm_head.weight" in f for f in report["failures"])


def test_template_check():
    from medmerge.lora import Adapter

    adapter = Adapter(
        path=__import__("pathlib").Path("pt"),
        config={},
        manifest={"template": "qwen3", "enable_thinking": False},
    )
    assert check_template([adapter], "qwen3", False) == []
    problems = check_template([adapter], "chatml", True)
    assert len(problems) == 2 and "template mismatch" in problems[0]


@pytest.mark.parametrize("block", [None, 8192], ids=["4MB-blocks", "8KB-blocks"])
@pytest.mark.parametrize("chunk", [7, 1 << 20], ids=["many-chunks", "one-chunk"])
def test_untouched_tensors_are_compared_a_chunk_at_a_time(
    models, good, tmp_path, chunk, block, monkeypatch
):
    """An untouched tensor is compared in chunks of elements (memory follows the chunk), as
    views of both streams' blocks where both hold them and copies where a chunk straddles a
    block of either (8 KB blocks: most do, at other offsets in the two files): a change is
    counted across chunk and block boundaries, NaN in any chunk is named, and the good merge
    stays EXACT."""
    monkeypatch.setattr(verify_run, "_CHUNK_ELEMENTS", chunk)
    if block is not None:
        stream = functools.partial(verify_run.CheckpointStream, block_bytes=block)
        monkeypatch.setattr(verify_run, "CheckpointStream", stream)
    assert _verify(models, good)["verdict"] == "EXACT"
    broken = tmp_path / "embed"
    shutil.copytree(good, broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    name = "model.embed_tokens.weight"
    file = broken / index["weight_map"][name]
    state = load_file(file)
    flat = state[name].view(-1)
    flat[[0, 6, 7, 13, flat.numel() - 1]] += 1.0  # on both sides of chunk boundaries
    flat[20] = float("nan")
    save_file(state, file, {"format": "pt"})
    failures = _verify(models, broken)["failures"]
    assert f"{name}: changed (6 elements) although no adapter touches it" in failures
    assert f"{name}: holds NaN or Inf" in failures


@pytest.mark.parametrize("value", ["nan", "inf", "3e38"])
def test_a_lora_tensor_holding_nan_or_inf_is_named_and_a_huge_finite_one_is_not(
    models, good, tmp_path, value
):
    """Whether a touched tensor is finite comes from ||x - W'||^2 (NaN or Inf wherever W' is);
    a finite W' whose squared residual overflows is scanned, not called non-finite."""
    broken = tmp_path / value
    shutil.copytree(good, broken)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    name = next(n for n in index["weight_map"] if "q_proj" in n)
    file = broken / index["weight_map"][name]
    state = load_file(file)
    state[name].view(-1)[5] = float(value)
    save_file(state, file, {"format": "pt"})
    report = _verify(models, broken)
    assert not report["ok"]
    named = f"{name}: holds NaN or Inf" in report["failures"]
    assert named == (value != "3e38"), report["failures"]
