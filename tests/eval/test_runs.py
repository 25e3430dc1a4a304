"""Backends and whole evaluation runs on the tiny base: numbers recomputed with stock code."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medmerge.errors import ConfigError
from medmerge.eval.backends import LoglikRequest
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import GenEvalConfig, McqEvalConfig, ModelSpec, ScoreConfig
from medmerge.eval.run import run_gen_eval, run_mcq_eval, run_score
from medmerge.manifest import model_identity, write_manifest


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def adapter(tiny_base, tmp_path_factory):
    """A stock-PEFT LoRA adapter trained (by manifest) with qwen3, thinking off."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj", "v_proj"]),
    )
    folder = tmp_path_factory.mktemp("adapter") / "sft"
    peft_model.save_pretrained(folder)
    write_manifest(
        folder,
        "train",
        {"base": model_identity(tiny_base), "template": "qwen3", "enable_thinking": False},
    )
    return folder


def test_loglik_recomputed_with_stock_transformers(tiny_base, repo, tmp_path):
    cfg = McqEvalConfig(
        model=str(tiny_base),
        data=[str(repo / "data/mcq_zh/cmmlu_medical_dev")],
        out=str(tmp_path / "mcq"),
        few_shot=1,
        limit=6,
        batch_size=5,
    )
    assert run_mcq_eval(cfg) == 0
    out = tmp_path / "mcq"
    assert {p.name for p in out.iterdir()} >= {"run_meta.json", "predictions.jsonl", "results.json"}
    rows = read_jsonl(out / "predictions.jsonl")
    tok = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    for row in rows:
        for continuation, recorded in zip(row["continuations"], row["loglikelihoods"], strict=True):
            whole = tok(row["context"] + continuation)["input_ids"]
            n_ctx = len(tok(row["context"])["input_ids"])
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0].double().log_softmax(-1)
            value = sum(logits[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))
            assert value == pytest.approx(recorded, abs=1e-3)
        best = max(range(len(row["loglikelihoods"])), key=row["loglikelihoods"].__getitem__)
        assert row["predicted_index"] == best
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 6
    assert results["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 6)
    # --limit is stratified: every subject file of the folder takes its turn
    counts = [entry["n"] for entry in results["per_subject"].values()]
    assert sum(counts) == 6 and len(counts) > 1 and max(counts) - min(counts) <= 1
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["model"]["model"]["weights_digest"] and meta["data"]


def test_batched_greedy_equals_one_by_one(tiny_base):
    from medmerge.data.templates import get_template

    prompts = [
        "Hello",
        "What is hypertension and how is it treated?",
        "头痛怎么办？",
        "Dose?",
        "a b c d e f",
    ]
    spec = ModelSpec(model=str(tiny_base))
    batched = HFBackend(spec, device="cpu", batch_size=5)
    single = HFBackend(spec, device="cpu", batch_size=1)
    stops = get_template("qwen3_nothink").stop_token_ids(batched.tokenizer)
    decoding = {"do_sample": False, "max_new_tokens": 12, "seed": 0}
    assert batched.generate(prompts, decoding, stops) == single.generate(prompts, decoding, stops)


def test_adapters_applied_in_memory_match_peft(tiny_base, adapter):
    from peft import PeftModel

    spec = ModelSpec(base=str(tiny_base), adapters=[{"path": str(adapter), "weight": 0.5}])
    from medmerge.lora import load_adapter

    backend = HFBackend(spec, device="cpu", adapters=[load_adapter(adapter)])
    request = LoglikRequest("The patient has a fever and", " a cough")
    (got,) = backend.loglikelihood([request])
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, adapter)
    for module in peft_model.modules():
        if hasattr(module, "scaling") and isinstance(module.scaling, dict):
            module.scaling = {k: v * 0.5 for k, v in module.scaling.items()}
    tok = AutoTokenizer.from_pretrained(tiny_base)
    whole = tok(request.context + request.continuation)["input_ids"]
    n_ctx = len(tok(request.context)["input_ids"])
    with torch.no_grad():
        logits = peft_model(torch.tensor([whole])).logits[0].double().log_softmax(-1)
    want = sum(logits[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))
    assert got == pytest.approx(want, abs=1e-4)
    assert backend.identity["adapters"][0]["weight"] == 0.5


def test_template_mismatch_refused_unless_allowed(tiny_base, adapter, repo, tmp_path):
    common = dict(
        base=str(tiny_base),
        adapters=[{"path": str(adapter), "weight": 1.0}],
        data=[str(repo / "data/mcq_zh/cmmlu_medical_dev/anatomy.csv")],
        limit=2,
    )
    with pytest.raises(ConfigError, match=r"template mismatch.*--allow-template-mismatch"):
        run_mcq_eval(
            McqEvalConfig(**common, out=str(tmp_path / "refused"), template="qwen3_nothink")
        )
    assert not (tmp_path / "refused").exists()
    cfg = McqEvalConfig(
        **common,
        out=str(tmp_path / "allowed"),
        template="qwen3_nothink",
        allow_template_mismatch=True,
        mode="generate",
        max_new_tokens=4,
    )
    assert run_mcq_eval(cfg) == 0
    meta = json.loads((tmp_path / "allowed/run_meta.json").read_text())
    assert meta["template_mismatch"] and meta["model"]["adapters"][0]["weight"] == 1.0
    rows = read_jsonl(tmp_path / "allowed/predictions.jsonl")
    assert all("raw_output" in r for r in rows)
    results = json.loads((tmp_path / "allowed/results.json").read_text())
    assert results["invalid_rate"] == pytest.approx(sum(r["invalid"] for r in rows) / 2)
    ok = McqEvalConfig(**common, out=str(tmp_path / "matching"), template="qwen3")
    assert run_mcq_eval(ok) == 0


def test_gen_eval_then_score_agree(tiny_base, repo, tmp_path):
    cfg = GenEvalConfig(
        model=str(tiny_base),
        data=str(repo / "data/qa_en/meqsum_sample.jsonl"),
        out=str(tmp_path / "gen"),
        limit=4,
        decoding={"preset": "B", "max_new_tokens": 16},
    )
    assert run_gen_eval(cfg) == 0
    gen = json.loads((tmp_path / "gen/results.json").read_text())
    meta = json.loads((tmp_path / "gen/run_meta.json").read_text())
    assert meta["decoding"]["temperature"] == 0.6 and meta["decoding"]["top_p"] == 0.8
    assert (
        run_score(
            ScoreConfig(
                predictions=str(tmp_path / "gen/predictions.jsonl"), out=str(tmp_path / "score")
            )
        )
        == 0
    )
    score = json.loads((tmp_path / "score/results.json").read_text())
    assert score["metrics"] == gen["metrics"]
    assert score["leakage"] == gen["leakage"]
    with pytest.raises(Exception, match="not empty"):
        run_score(
            ScoreConfig(
                predictions=str(tmp_path / "gen/predictions.jsonl"), out=str(tmp_path / "score")
            )
        )
