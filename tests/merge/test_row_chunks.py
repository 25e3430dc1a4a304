"""The merge streams a LoRA-changed matrix a chunk of rows at a time: the chunked output is
bit for bit the one a whole-tensor merge writes, for (out, in) Linear and transposed (in,
out) Conv1D layouts, and verifies EXACT."""

from __future__ import annotations

import pytest

from helpers.factories import make_adapter as make_peft_adapter
from helpers.factories import make_base as make_qwen3_base
from helpers.magnitudes import TARGETS, make_adapter, make_base
from medmerge.cli import main
from medmerge.lora import delta
from medmerge.merge import full_export
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify

QWEN3_TARGETS = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    qwen3 = make_qwen3_base(root / "qwen3")
    gpt2 = make_base(root / "gpt2", "gpt2", "bf16")
    return {
        "root": root,
        "qwen3": (
            qwen3,
            [
                make_peft_adapter(qwen3, root / "q0", 1, r=4, target_modules=QWEN3_TARGETS),
                make_peft_adapter(qwen3, root / "q1", 2, r=8, target_modules=QWEN3_TARGETS),
            ],
        ),
        "gpt2": (gpt2, [make_adapter(gpt2, root / "g0", 1e-2, 1, target_modules=TARGETS["gpt2"])]),
    }


def _merge(base, adapters, out) -> None:
    argv = ["merge", "--base", str(base), "--out", str(out), "--no-verify"]
    for index, adapter in enumerate(adapters):
        argv += ["--adapter", f"{adapter}={0.3 + 0.4 * index}"]
    assert main(argv) == 0


@pytest.mark.parametrize("model", ["qwen3", "gpt2"])
def test_row_chunks_write_the_whole_tensor_merge(inputs, model, monkeypatch):
    base, adapters = inputs[model]
    root = inputs["root"]
    # Blocks of 2 rows (64-wide fp64 rows) so that every matrix spans many blocks.
    monkeypatch.setattr(delta, "_BLOCK_BYTES", 2 * 8 * 64)
    monkeypatch.setattr(full_export, "_CHUNK_BYTES", 1 << 30)  # one chunk per tensor
    _merge(base, adapters, root / f"{model}-whole")
    pieces = []
    original = full_export._pieces
    monkeypatch.setattr(full_export, "_CHUNK_BYTES", 3 * 64 * 2)  # a few rows per chunk
    monkeypatch.setattr(
        full_export, "_pieces", lambda *a: pieces.append(original(*a)) or pieces[-1]
    )
    _merge(base, adapters, root / f"{model}-chunked")
    assert max(len(p) for p in pieces) > 10  # the merge did stream in chunks
    whole, chunked = root / f"{model}-whole", root / f"{model}-chunked"
    shards = sorted(p.name for p in whole.glob("*.safetensors"))
    assert shards == sorted(p.name for p in chunked.glob("*.safetensors"))
    for name in shards:
        assert (whole / name).read_bytes() == (chunked / name).read_bytes(), name
    report = verify(VerifyConfig(base=str(base), merged=str(chunked), logits=False))
    assert report["verdict"] == "EXACT", report["failures"]
