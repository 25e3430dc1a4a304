"""The backend registry and protocol: lookup by name, lazy imports, callers that never ask
which backend they hold, and the eval stage on backend vllm (through the stand-in)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import fake_vllm
from helpers.factories import make_adapter
from medmerge.errors import ConfigError
from medmerge.eval.backends import BACKENDS, backend_class, load_backend
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import EngineSettings, ModelSpec
from medmerge.eval.stage import EvalStageConfig, run_eval_stage
from medmerge.lora import load_adapter

SRC = Path(__file__).resolve().parents[2] / "src" / "medmerge"
ASKS_WHICH_BACKEND = re.compile(
    r"isinstance\([^)]*Backend|(hasattr|getattr)\(\s*backend\b|\bbackend\.(model|llm|lora)\b"
)


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("protocol_adapters")
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "down_proj"]}
    return (
        make_adapter(tiny_base, root / "pt", 1, **lora),
        make_adapter(tiny_base, root / "sft", 2, **lora),
    )


def test_no_caller_asks_which_backend_it_holds():
    """Backends differ only behind their protocol methods (eval/backends/base.py)."""
    inside = SRC / "eval" / "backends"
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if inside not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ASKS_WHICH_BACKEND.search(line)
    ]
    assert found == []


def test_every_engine_choice_is_registered_and_implements_the_protocol():
    choices = EngineSettings.model_fields["backend"].annotation.__args__
    assert sorted(choices) == sorted(BACKENDS)
    for name in BACKENDS:
        cls = backend_class(name)
        assert cls.name == name
        for method in ("from_engine", "loglikelihood", "generate", "merged", "token_penalty"):
            assert callable(getattr(cls, method)), (name, method)
    with pytest.raises(ConfigError, match="unknown backend 'tgi'; choose one of hf, vllm"):
        backend_class("tgi")


def test_vllm_is_imported_only_when_asked_for():
    code = (
        "import sys; from medmerge.eval.backends import backend_class; backend_class('hf'); "
        "print(sorted(m for m in sys.modules if 'vllm' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_hf_refuses_to_switch_a_merge_it_holds_in_its_weights(tiny_base, adapters):
    spec = ModelSpec(base=str(tiny_base), adapters=[{"path": str(adapters[0]), "weight": 0.5}])
    backend = load_backend(spec, EngineSettings(device="cpu"), [load_adapter(adapters[0])])
    refusal = "open it on the base with the adapters and no weights"
    with pytest.raises(ConfigError, match=refusal), backend.merged((1.0,)):
        pass
    plain = load_backend(ModelSpec(model=str(tiny_base)), EngineSettings(device="cpu"))
    with pytest.raises(ConfigError, match="opened without adapters"), plain.merged((1.0,)):
        pass


def test_merged_block_equals_opening_at_those_weights(tiny_base, adapters):
    from medmerge.eval.backends import LoglikRequest

    loaded = [load_adapter(a) for a in adapters]
    requests = [LoglikRequest("The patient reports", " chest pain")]
    engine = EngineSettings(device="cpu", dtype="fp32")
    switching = load_backend(ModelSpec(base=str(tiny_base)), engine, loaded)
    before = switching.loglikelihood(requests)
    with switching.merged((0.3, 0.7)):
        inside = switching.loglikelihood(requests)
    weights = [{"path": str(a), "weight": w} for a, w in zip(adapters, (0.3, 0.7), strict=True)]
    fixed = load_backend(ModelSpec(base=str(tiny_base), adapters=weights), engine, loaded)
    assert inside == fixed.loglikelihood(requests)
    assert switching.loglikelihood(requests) == before != inside
    assert isinstance(switching, HFBackend)  # the registry's hf entry


def test_eval_stage_honours_backend_vllm(tiny_base, tmp_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    cfg = EvalStageConfig(
        model=str(tiny_base),
        engine=EngineSettings(backend="vllm", dtype="fp32", max_model_len=128),
        suites={},
        out=str(tmp_path / "eval"),
    )
    assert run_eval_stage(cfg, lambda backend, _suites: [dict(backend.identity)]) == 0
    (llm,) = fake_vllm.CREATED
    assert llm.kwargs["model"] == str(tiny_base) and llm.kwargs["max_model_len"] == 128
    (row,) = json.loads((tmp_path / "eval" / "results.json").read_text())["rows"]
    assert row["backend"] == "vllm" and row["max_model_len"] == 128
