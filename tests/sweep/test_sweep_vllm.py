"""The sweep on backend vllm (vLLM replaced at its boundary by tests/helpers/fake_vllm.py).

Each weight point is served as one exported merged adapter under its own LoRA id; the
cells must equal the transformers sweep's, think penalty included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import fake_vllm
from medmerge.sweep import SweepConfig, run_sweep
from medmerge.sweep import run as sweep_run
from medmerge.sweep.mitigation import penalized_token_ids


def _cells(cfg: SweepConfig) -> dict[str, dict]:
    adapters = [sweep_run.load_adapter(a.path) for a in cfg.adapters]
    store = sweep_run.PointStore(Path(cfg.out), sweep_run._inputs(cfg, adapters))
    return {
        json.dumps(cell, sort_keys=True): store.get(cell)
        for w in cfg.weight_points()
        for cell in sweep_run._cells(cfg, w)
    }


def test_vllm_sweep_equals_the_transformers_sweep(sweep_values, tmp_path, monkeypatch):
    values = {**sweep_values, "grid": {"pt": [0.3, 1.0], "sft": "complement"}}
    hf = SweepConfig(**{**values, "out": str(tmp_path / "hf")})
    assert run_sweep(hf) == 0
    fake_vllm.install(monkeypatch)
    engine = {"backend": "vllm", "tensor_parallel_size": 2}
    vllm = SweepConfig(**{**values, **engine, "out": str(tmp_path / "vllm")})
    assert run_sweep(vllm) == 0

    assert "engine" not in sweep_run._inputs(hf, [])  # hf sweeps keep their finished points
    want, got = _cells(hf), _cells(vllm)
    assert list(want) == list(got) and len(want) == 2 * 3
    for key, cell in want.items():
        if '"kind": "mcq"' in key:
            flat = [s for item in cell["loglikelihoods"] for s in item]
            theirs = [s for item in got[key]["loglikelihoods"] for s in item]
            assert theirs == pytest.approx(flat, abs=1e-4), key
        else:
            assert got[key]["predictions"] == cell["predictions"], key

    (llm,) = fake_vllm.CREATED  # the base loaded once for every point
    assert llm.kwargs["enable_lora"] and llm.kwargs["tensor_parallel_size"] == 2
    assert sorted({c["lora_request"].lora_int_id for c in llm.calls}) == [1, 2]
    penalty = -values["decodings"]["penalty"]["think_penalty"]
    ids = penalized_token_ids(llm.tokenizer)
    biases = [c["params"].logit_bias for c in llm.calls if c["params"].prompt_logprobs is None]
    assert ids and sorted(map(len, biases)) == [0, 0, len(ids), len(ids)]
    assert all(b == dict.fromkeys(ids, penalty) for b in biases if b)
