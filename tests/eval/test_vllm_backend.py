"""The vLLM backend with vLLM replaced at its boundary by tests/helpers/fake_vllm.py.

The stand-in answers from a real transformers model with the LoRA folder it is handed
loaded by PEFT, so equal numbers here mean the exported merged adapter, the token split and
the logprob plumbing are right: scores and greedy text equal HFBackend's on the same spec.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import fake_vllm as vllm_stand_in
from medmerge.cli import main
from medmerge.errors import ConfigError
from medmerge.eval.backends import LoglikRequest, load_backend
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.backends.vllm import (
    VLLMBackend,
    merged_lora_rank,
    sampling_arguments,
    vllm_max_lora_rank,
)
from medmerge.eval.config import Decoding, EngineSettings, McqEvalConfig, ModelSpec
from medmerge.lora import load_adapter
from medmerge.manifest import model_identity, write_manifest

VLLM = EngineSettings(backend="vllm", dtype="fp32", tensor_parallel_size=2)


def make_adapter(base: Path, folder: Path, seed: int, **lora: object) -> Path:
    """A PEFT LoRA adapter with visible (non-zero, scaled-up) B factors and a manifest."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft_model.save_pretrained(folder)
    payload = {"base": model_identity(base), "template": "qwen3", "enable_thinking": False}
    write_manifest(folder, "train", payload)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory) -> tuple[Path, Path]:
    """Two adapters of different rank, targets and scale rule (rsLoRA on the second)."""
    root = tmp_path_factory.mktemp("vllm_adapters")
    return (
        make_adapter(tiny_base, root / "pt", 1, r=4, lora_alpha=8, target_modules="all-linear"),
        make_adapter(
            tiny_base,
            root / "sft",
            2,
            r=2,
            lora_alpha=4,
            use_rslora=True,
            target_modules=["q_proj", "v_proj", "down_proj"],
        ),
    )


@pytest.fixture
def fake_vllm(monkeypatch):
    return vllm_stand_in.install(monkeypatch)


def merged_spec(tiny_base, adapters) -> ModelSpec:
    weights = [{"path": str(a), "weight": w} for a, w in zip(adapters, (0.3, 0.7), strict=True)]
    return ModelSpec(base=str(tiny_base), adapters=weights)


REQUESTS = [
    LoglikRequest("Question: which organ pumps blood?\nAnswer:", " A"),
    LoglikRequest("Question: which organ pumps blood?\nAnswer:", " the heart"),
    LoglikRequest("Question: which organ pumps blood?\nAnswer:", " B. the liver"),
    LoglikRequest("The patient reports", " chest pain and shortness of breath."),
]
PROMPTS = ["The patient reports", "Question: what lowers fever?\nAnswer:", "Hello"]


def test_merged_adapter_scores_and_greedy_text_equal_hf(fake_vllm, tiny_base, adapters):
    spec = merged_spec(tiny_base, adapters)
    loaded = [load_adapter(a) for a in adapters]
    hf = HFBackend(spec, device="cpu", batch_size=2, adapters=loaded)
    backend = load_backend(spec, VLLM, loaded)
    assert isinstance(backend, VLLMBackend)

    ours, theirs = backend.loglikelihood(REQUESTS), hf.loglikelihood(REQUESTS)
    assert ours == pytest.approx(theirs, abs=1e-4)
    base_only = HFBackend(ModelSpec(model=str(tiny_base)), device="cpu").loglikelihood(REQUESTS)
    assert max(abs(a - b) for a, b in zip(ours, base_only, strict=True)) > 1e-2  # merge seen

    greedy = Decoding(preset="A", max_new_tokens=10).resolved()
    eos = hf.tokenizer.eos_token_id
    # a stop token the first answer reaches mid-way, so the cut at a stop is exercised too
    enc = hf.tokenizer(PROMPTS[0], return_tensors="pt", add_special_tokens=False)
    free = hf.model.generate(**enc, max_new_tokens=10, do_sample=False, eos_token_id=[eos])
    answer = free[0, enc["input_ids"].shape[1] :].tolist()
    stop = answer[3]
    want = hf.generate(PROMPTS, greedy, [eos, stop])
    assert want[0].stopped and want[0].tokens == answer.index(stop)
    assert backend.generate(PROMPTS, greedy, [eos, stop]) == want

    (llm,) = vllm_stand_in.CREATED
    assert llm.kwargs["enable_lora"] is True and llm.kwargs["max_loras"] == 1
    assert merged_lora_rank(loaded) == 6 and llm.kwargs["max_lora_rank"] == 8
    assert llm.kwargs["tensor_parallel_size"] == 2 and llm.kwargs["dtype"] == "float32"
    assert llm.kwargs["model"] == str(tiny_base)
    requests = {c["lora_request"].lora_int_id for c in llm.calls}
    assert requests == {1} and all(c["lora_request"] is not None for c in llm.calls)
    config = json.loads(
        (Path(llm.calls[0]["lora_request"].lora_path) / "adapter_config.json").read_text()
    )
    assert config["r"] == 6 and not config.get("modules_to_save")
    assert all(c["params"].ignore_eos for c in llm.calls if c["params"].prompt_logprobs is None)
    assert backend.identity["tensor_parallel_size"] == 2 and backend.identity["lora_rank"] == 6


def test_model_folder_runs_without_lora(fake_vllm, tiny_base):
    spec = ModelSpec(model=str(tiny_base))
    backend = VLLMBackend(spec, VLLM)
    hf = HFBackend(spec, device="cpu")
    assert backend.loglikelihood(REQUESTS) == pytest.approx(hf.loglikelihood(REQUESTS), abs=1e-4)
    (llm,) = vllm_stand_in.CREATED
    assert llm.kwargs["enable_lora"] is False
    assert [c["lora_request"] for c in llm.calls] == [None]


def test_new_weights_get_a_new_adapter_id(fake_vllm, tiny_base, adapters):
    """vLLM caches adapters by id: reusing one would keep serving the old weights."""
    spec = merged_spec(tiny_base, adapters)
    loaded = [load_adapter(a) for a in adapters]
    backend = VLLMBackend(spec, VLLM, loaded)
    first = backend.loglikelihood(REQUESTS[:1])
    old_folder = Path(backend.lora.request.lora_path)
    with backend.merged((1.0, 0.0)):
        assert not old_folder.exists() and backend.lora.request.lora_int_id == 2
        moved = backend.loglikelihood(REQUESTS[:1])
    at_pt = HFBackend(
        ModelSpec(base=str(tiny_base), adapters=[{"path": str(adapters[0]), "weight": 1.0}]),
        device="cpu",
        adapters=loaded[:1],
    )
    assert moved == pytest.approx(at_pt.loglikelihood(REQUESTS[:1]), abs=1e-4)
    assert abs(moved[0] - first[0]) > 1e-3
    # after the block the opened merge is served again, under a fresh id
    assert backend.loglikelihood(REQUESTS[:1]) == pytest.approx(first, abs=1e-6)
    assert backend.lora.request.lora_int_id == 3


def test_mcq_cli_with_vllm_records_the_engine(fake_vllm, tiny_base, adapters, repo, tmp_path):
    common = ["eval", "mcq", "--base", str(tiny_base), "--template", "qwen3", "--limit", "3"]
    common += ["--data", str(repo / "data/mcq_en/dev_HEAD_EN.json")]
    common += [f"--adapter={adapters[0]}=0.3", f"--adapter={adapters[1]}=0.7"]
    assert main([*common, "--out", str(tmp_path / "hf"), "--device", "cpu"]) == 0
    vllm_args = ["--backend", "vllm", "--tensor-parallel-size", "2", "--max-model-len", "512"]
    assert main([*common, "--out", str(tmp_path / "vllm"), *vllm_args]) == 0

    meta = json.loads((tmp_path / "vllm" / "run_meta.json").read_text())
    assert meta["model"]["backend"] == "vllm" and meta["model"]["tensor_parallel_size"] == 2
    assert meta["model"]["max_model_len"] == 512 and meta["model"]["max_lora_rank"] == 8
    assert [a["weight"] for a in meta["model"]["adapters"]] == [0.3, 0.7]
    assert vllm_stand_in.CREATED[0].kwargs["max_model_len"] == 512

    def scores(name):
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        return [s for line in lines for s in json.loads(line)["loglikelihoods"]]

    assert scores("vllm") == pytest.approx(scores("hf"), abs=1e-4)


def test_sampling_settings_follow_the_decoding():
    greedy = sampling_arguments(Decoding(preset="A", max_new_tokens=7).resolved(), [5, 9], {})
    assert greedy == {
        "max_tokens": 7,
        "temperature": 0.0,
        "stop_token_ids": [5, 9],
        "ignore_eos": True,
    }
    sampled = sampling_arguments(Decoding(preset="B", seed=3).resolved(), [5], {7: -2.0})
    assert sampled["temperature"] == 0.6 and sampled["top_p"] == 0.8
    assert sampled["top_k"] == -1 and sampled["seed"] == 3 and sampled["logit_bias"] == {7: -2.0}
    assert sampling_arguments(Decoding(preset="C", top_k=40).resolved(), [5], {})["top_k"] == 40


def test_vllm_absent_is_one_clear_error(monkeypatch, tiny_base):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'medmerge\[vllm\]' or use --backend hf"):
        load_backend(ModelSpec(model=str(tiny_base)), VLLM)


def test_max_lora_rank_rounds_up_and_refuses_above_512():
    assert [vllm_max_lora_rank(r) for r in (1, 8, 9, 300, 320, 321, 512)] == [
        8,
        8,
        16,
        320,
        320,
        512,
        512,
    ]
    with pytest.raises(ConfigError, match=r"rank 513 .*--adapter-rank auto.*--export full"):
        vllm_max_lora_rank(513)


def test_rank_above_512_refused_before_the_engine_starts(fake_vllm, tiny_base, tmp_path):
    wide = [
        make_adapter(
            tiny_base, tmp_path / name, seed, r=260, lora_alpha=260, target_modules=["q_proj"]
        )
        for seed, name in enumerate(("a", "b"))
    ]
    spec = ModelSpec(base=str(tiny_base), adapters=[{"path": str(a), "weight": 0.5} for a in wide])
    with pytest.raises(ConfigError, match=r"rank 520 .*--adapter-rank auto"):
        VLLMBackend(spec, VLLM, [load_adapter(a) for a in wide])
    assert vllm_stand_in.CREATED == []


def test_modules_to_save_and_nonlinear_methods_refused(fake_vllm, tiny_base, adapters, tmp_path):
    saving = make_adapter(
        tiny_base,
        tmp_path / "mts",
        3,
        r=2,
        target_modules=["q_proj"],
        modules_to_save=["model.norm"],
    )
    spec = ModelSpec(base=str(tiny_base), adapters=[{"path": str(saving), "weight": 1.0}])
    with pytest.raises(ConfigError, match=r"modules_to_save \(model\.norm\).*--export full"):
        VLLMBackend(spec, VLLM, [load_adapter(saving)])
    ties = merged_spec(tiny_base, adapters).model_copy(update={"method": "ties"})
    with pytest.raises(ConfigError, match=r"method linear only, not ties"):
        VLLMBackend(ties, VLLM, [load_adapter(a) for a in adapters])
    assert vllm_stand_in.CREATED == []


def test_vllm_settings_need_backend_vllm(tiny_base):
    with pytest.raises(ValueError, match="tensor_parallel_size apply to backend vllm only"):
        McqEvalConfig(model=str(tiny_base), data=["x"], out="o", tensor_parallel_size=2)
