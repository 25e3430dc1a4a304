"""Evaluation refuses models it could not load faithfully, in one line with exit status 2.

A model folder missing a tensor, an adapter made for a base of another size, non-finite
weights, and a missing local path (which transformers would look up on the model hub).
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Qwen3ForCausalLM

from helpers import tiny_qwen3_config
from medmerge.cli import main
from medmerge.errors import MergeError
from medmerge.eval.backends.hf import HFBackend
from medmerge.eval.config import ModelSpec

REPO = Path(__file__).resolve().parents[2]
DATA = str(REPO / "data/qa_en/meqsum_sample.jsonl")


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("medmerge: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def _qwen_like_tiny_base(tiny_base: Path, folder: Path, **overrides) -> Path:
    """A random Qwen3 with the tiny base's tokenizer files, untied, of the given sizes."""
    torch.manual_seed(1)
    Qwen3ForCausalLM(tiny_qwen3_config(**overrides)).save_pretrained(folder)
    for file in tiny_base.iterdir():
        if file.name.startswith("tokenizer") or file.name.endswith(".jinja"):
            shutil.copy2(file, folder / file.name)
    return folder


def _adapter(base: Path, folder: Path, scale_b: float = 3.0) -> Path:
    torch.manual_seed(2)
    model = Qwen3ForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=2, lora_alpha=4, init_lora_weights=False, target_modules=["q_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(scale_b)
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def foreign_adapter(tiny_base, tmp_path_factory) -> Path:
    """An adapter trained on a base twice as wide as the tiny base."""
    root = tmp_path_factory.mktemp("foreign")
    wide = _qwen_like_tiny_base(tiny_base, root / "wide", hidden_size=64, head_dim=16)
    return _adapter(wide, root / "adapter")


def test_adapter_for_another_base_gets_the_merge_refusal(
    tiny_base, foreign_adapter, tmp_path, capsys
):
    adapter = f"{foreign_adapter}=1"
    merge = ["merge", "--base", str(tiny_base), "--adapter", adapter, "--out", str(tmp_path / "m")]
    assert main(merge) == 2
    merge_line = _error_line(capsys)
    assert "the adapter was made for another base model" in merge_line
    for command in (
        ["gen", "--data", DATA],
        ["mcq", "--data", str(REPO / "data/mcq_zh/cmmlu_medical_dev")],
    ):
        out = tmp_path / command[0]
        argv = ["eval", *command, "--base", str(tiny_base), "--adapter", adapter, "--limit", "1"]
        assert main([*argv, "--device", "cpu", "--out", str(out)]) == 2
        assert _error_line(capsys) == merge_line
        assert not out.exists()


def test_model_folder_missing_lm_head_is_not_evaluated(tiny_base, tmp_path, capsys):
    folder = _qwen_like_tiny_base(tiny_base, tmp_path / "model")
    state = load_file(folder / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    argv = ["eval", "gen", "--model", str(folder), "--data", DATA, "--limit", "1"]
    assert main([*argv, "--device", "cpu", "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "1 missing from the checkpoint: lm_head.weight" in line and str(folder) in line
    assert not out.exists()


def test_non_finite_adapter_is_refused_in_memory(tiny_base, tmp_path, capsys):
    adapter = _adapter(tiny_base, tmp_path / "adapter")
    file = adapter / "adapter_model.safetensors"
    state = load_file(file)
    key = next(k for k in state if "lora_B" in k)
    state[key][0, 0] = float("inf")
    save_file(state, file, metadata={"format": "pt"})
    argv = ["eval", "gen", "--base", str(tiny_base), "--adapter", f"{adapter}=0.5", "--data", DATA]
    assert main([*argv, "--limit", "1", "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert f"tensor {key!r} holds NaN or Inf" in _error_line(capsys)


def test_merged_delta_that_overflows_the_dtype_is_refused(tiny_base, tmp_path):
    from medmerge.lora import load_adapter

    adapter = _adapter(tiny_base, tmp_path / "huge", scale_b=1e9)  # finite in fp32
    spec = ModelSpec(base=str(tiny_base), adapters=[{"path": str(adapter), "weight": 1.0}])
    with pytest.raises(MergeError, match=r"q_proj\.weight: merged tensor overflows torch\.float16"):
        HFBackend(spec, device="cpu", dtype="fp16", adapters=[load_adapter(adapter)])


class _CountingHub(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        self.requests.append(self.path)
        self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_missing_local_path_makes_no_hub_request(tmp_path):
    """transformers asks HF_ENDPOINT for `runs/merged` (with retries) before failing."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    medmerge = str(Path(sys.executable).with_name("medmerge"))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [medmerge, "eval", "gen", "--model", "runs/merged", "--data", DATA, "--out", "o"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.shutdown()
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "medmerge: error: runs/merged: no such model folder; pass an existing local folder "
        "(medmerge never looks a name up on a model hub unless allow_hub is set)"
    ]
    assert _CountingHub.requests == []
    assert time.monotonic() - started < 60
    assert not (tmp_path / "o").exists()
