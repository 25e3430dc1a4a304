"""The merged checkpoint's file layout: the base's shards and index by default, transformers'
re-sharding with --max-shard-size; verify is EXACT on both."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen3ForCausalLM

from helpers import assert_one_error
from helpers.factories import make_adapter, tiny_config
from medmerge.checkpoints import INDEX_NAME, direct, read_header
from medmerge.cli import main
from medmerge.manifest import MANIFEST_NAME, model_identity
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory):
    """A random tiny Qwen3 in bf16 saved by transformers in exactly 4 shards, and two adapters."""
    root = tmp_path_factory.mktemp("four-shards")
    base = root / "base"
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_config()).to(torch.bfloat16)
    model.save_pretrained(base, max_shard_size="75KB")
    assert len(list(base.glob("*.safetensors"))) == 4
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    first = make_adapter(base, root / "a0", seed=1, r=4, lora_alpha=8, target_modules=targets)
    second = make_adapter(base, root / "a1", seed=2, r=8, lora_alpha=8, target_modules=targets)
    return {"root": root, "base": base, "adapters": [first, second]}


def _merge(models, out, *extra) -> int:
    a0, a1 = models["adapters"]
    argv = ["merge", "--base", str(models["base"]), "--out", str(out), "--no-verify", *extra]
    return main([*argv, "--adapter", f"{a0}=0.3", "--adapter", f"{a1}=0.7"])


def _verdict(models, out) -> str:
    report = verify(VerifyConfig(base=str(models["base"]), merged=str(out), logits=False))
    assert not report["failures"], report["failures"]
    return report["verdict"]


def _weight_map(folder):
    return json.loads((folder / INDEX_NAME).read_text())["weight_map"]


def _tensor_order(file):
    return [(e.name, e.dtype, e.shape) for e in read_header(file)]


def test_the_base_shards_and_index_are_kept(four_shards):
    out = four_shards["root"] / "kept"
    assert _merge(four_shards, out) == 0
    base = four_shards["base"]
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        p.name for p in base.glob("*.safetensors")
    )
    assert _weight_map(out) == _weight_map(base)
    for shard in base.glob("*.safetensors"):  # the same tensors, in the same byte order
        assert _tensor_order(out / shard.name) == _tensor_order(shard)
    index = json.loads((out / INDEX_NAME).read_text())
    sizes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert 0 < index["metadata"]["total_size"] < sizes
    assert _verdict(four_shards, out) == "EXACT"


def test_max_shard_size_reshards(four_shards):
    out = four_shards["root"] / "one-file"
    assert _merge(four_shards, out, "--max-shard-size", "2GB") == 0
    assert [p.name for p in out.glob("*.safetensors")] == ["model.safetensors"]
    assert not (out / INDEX_NAME).exists()
    assert _verdict(four_shards, out) == "EXACT"

    out = four_shards["root"] / "small-shards"
    assert _merge(four_shards, out, "--max-shard-size", "40KB") == 0
    files = sorted(out.glob("*.safetensors"))
    assert len(files) > 4
    assert files[0].name == f"model-00001-of-{len(files):05d}.safetensors"
    assert set(_weight_map(out).values()) == {f.name for f in files}
    assert _verdict(four_shards, out) == "EXACT"


def test_a_kept_layout_converts_dtype_in_place(four_shards):
    """--dtype fp32 keeps each tensor in its base shard; only the byte sizes change."""
    out = four_shards["root"] / "fp32"
    assert _merge(four_shards, out, "--dtype", "fp32") == 0
    assert _weight_map(out) == _weight_map(four_shards["base"])
    assert {e.dtype for f in out.glob("*.safetensors") for e in read_header(f)} == {"F32"}
    assert _verdict(four_shards, out) == "EXACT"


@pytest.mark.parametrize("size", ["2XB", "0MB", "-1GB", "lots"])
def test_a_bad_shard_size_is_one_config_error(four_shards, size, capsys):
    out = four_shards["root"] / "never"
    code = _merge(four_shards, out, f"--max-shard-size={size}")
    assert_one_error(code, capsys.readouterr().err, "max_shard_size must be a size such as 2GB")
    assert not out.exists()


@pytest.mark.parametrize("cached", [0.0, 1.0], ids=["around-page-cache", "through-page-cache"])
def test_the_base_is_hashed_as_it_is_read(four_shards, cached, monkeypatch):
    """The merge reads the base once (directly when it is not in the page cache) and takes its
    fingerprint from those reads: the manifest's base identity is model_identity's, and the
    bytes are the same either way."""
    monkeypatch.setattr(direct, "cached_fraction", lambda fd: cached)
    out = four_shards["root"] / f"hashed-{cached}"
    assert _merge(four_shards, out) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["base"] == model_identity(four_shards["base"])
    reference = four_shards["root"] / "kept"
    if not reference.exists():
        assert _merge(four_shards, reference) == 0
    for shard in four_shards["base"].glob("*.safetensors"):
        assert (out / shard.name).read_bytes() == (reference / shard.name).read_bytes()
