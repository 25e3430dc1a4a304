"""Verify as a certificate: a merge that is the intended one rounded once is EXACT (exit 0)
at every realistic delta size and output dtype, whatever a weight fit of the rounded delta
says; untouched tensors keep their own dtype bit for bit; messages name the final folder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.magnitudes import RATIOS, TARGETS, make_adapter, make_base
from medmerge.cli import main
from medmerge.merge import MergeConfig, run_merge
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify
from medmerge.verify.tensors import same_bits

# The default tier keeps every ratio of Llama in bf16 (where rounding erases most of a small
# delta), the ends of the band in fp16 and fp32, and one realistic bf16 and fp16 point of each
# other architecture; the rest of the 4 x 3 x 6 matrix is slow.
ARCHS = ("llama", "gpt2", "gemma3", "moe")
FAST = {("llama", "bf16", r) for r in RATIOS}
FAST |= {("llama", "fp16", 3e-4), ("llama", "fp16", 1e-2), ("llama", "fp32", 1e-4)}
FAST |= {(a, d, r) for a in ARCHS[1:] for d, r in (("bf16", 1e-3), ("fp16", 1e-2))}
MATRIX = [
    pytest.param(arch, dtype, ratio, marks=() if (arch, dtype, ratio) in FAST else pytest.mark.slow)
    for arch in ARCHS
    for dtype in ("bf16", "fp16", "fp32")
    for ratio in RATIOS
]
TOUCHED = {"llama": 10, "gpt2": 7, "gemma3": 8, "moe": 4}


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """One base per (architecture, dtype), built on first use."""
    root, built = tmp_path_factory.mktemp("bases"), {}

    def get(arch, dtype):
        if (arch, dtype) not in built:
            built[arch, dtype] = make_base(root / f"{arch}-{dtype}", arch, dtype)
        return built[arch, dtype]

    return get


@pytest.fixture(scope="module")
def llama(bases):
    return {dtype: bases("llama", dtype) for dtype in ("bf16", "fp16", "fp32")}


def _adapters(base, root, ratio, arch="llama"):
    return [
        make_adapter(base, root / f"a{seed}", ratio, seed, target_modules=TARGETS[arch])
        for seed in (1, 2)
    ]


def _merge(base, adapters, out, weights=(0.3, 0.7), **fields) -> int:
    cfg = MergeConfig(
        base=str(base),
        out=str(out),
        adapters=[{"path": str(a), "weight": w} for a, w in zip(adapters, weights, strict=True)],
        **fields,
    )
    return run_merge(cfg)


@pytest.mark.parametrize(("arch", "dtype", "ratio"), MATRIX)
def test_correct_merge_is_exact_at_every_delta_size(bases, tmp_path, arch, dtype, ratio):
    base = bases(arch, dtype)
    adapters = _adapters(base, tmp_path, ratio, arch)
    assert _merge(base, adapters, tmp_path / "out") == 0  # merge verifies its output
    report = json.loads((tmp_path / "out" / "verify.json").read_text())
    assert report["verdict"] == "EXACT" and report["ok"], report["failures"]
    assert report["max_ulp_error"] <= 1 and report["tensors_touched"] == TOUCHED[arch]
    erased = [w for w in report["warnings"] if "retain" in w]
    if report["min_retention"] < 0.9:
        assert erased and f"{report['min_retention']:.1%}" in erased[0]
    else:
        assert not erased


def test_cli_exit_zero_and_final_folder_named(llama, tmp_path, capsys):
    """Merge stages into a temporary folder; its report and messages name the final one."""
    adapters = _adapters(llama["bf16"], tmp_path, 1e-3)
    out = tmp_path / "merged"
    argv = ["merge", "--base", str(llama["bf16"]), "--out", str(out)]
    for adapter, weight in zip(adapters, (0.3, 0.7), strict=True):
        argv += ["--adapter", f"{adapter}={weight}"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    record = (out / "verify.json").read_text()
    assert ".medmerge-tmp" not in err and ".medmerge-tmp" not in record
    assert json.loads(record)["merged"] == str(out)
    assert f"detailsin{out / 'verify.json'}" in "".join(err.split())  # rich wraps lines
    code = main(["verify", "--base", str(llama["bf16"]), "--merged", str(out), "--no-logits"])
    assert code == 0 and "EXACT" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A bf16 Llama whose norms are stored in fp32, two adapters at 1e-2, their merge."""
    root = tmp_path_factory.mktemp("mixed")
    base = make_base(root / "base", "llama", "mixed")
    adapters = _adapters(base, root, 1e-2)
    assert _merge(base, adapters, root / "out") == 0
    return {"base": base, "adapters": adapters, "out": root / "out"}


def test_untouched_tensors_keep_their_own_dtype_bit_for_bit(mixed):
    base = load_file(mixed["base"] / "model.safetensors")
    out = load_file(mixed["out"] / "model.safetensors")
    norms = [n for n in base if "norm" in n]
    assert norms and all(base[n].dtype == torch.float32 for n in norms)
    for name in norms:
        assert out[name].dtype == torch.float32 and torch.equal(out[name], base[name]), name
    assert out["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    report = verify(VerifyConfig(base=str(mixed["base"]), merged=str(mixed["out"])))
    assert report["verdict"] == "EXACT", report["failures"]


def test_a_norm_cast_to_the_model_dtype_is_caught(mixed, tmp_path):
    """What a merge that loads the whole model in bf16 does to fp32 norms."""
    broken = tmp_path / "cast"
    broken.mkdir()
    for file in mixed["out"].iterdir():
        (broken / file.name).write_bytes(file.read_bytes())
    state = load_file(broken / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.bfloat16)
    save_file(state, broken / "model.safetensors", {"format": "pt"})
    adapters = [
        {"path": str(a), "weight": w} for a, w in zip(mixed["adapters"], (0.3, 0.7), strict=True)
    ]
    report = verify(
        VerifyConfig(base=str(mixed["base"]), merged=str(broken), adapters=adapters, logits=False)
    )
    assert report["verdict"] == "WRONG" and not report["ok"]
    (line,) = [f for f in report["failures"] if f.startswith("model.norm.weight:")]
    assert "stored as bfloat16" in line and "float32" in line


@pytest.mark.parametrize("start", [0, 1, 3, 4])
def test_same_bits_compares_bit_patterns_at_any_offset(start):
    """Word-wide comparison (int64/int32 views where the bytes allow) gives the element-wise
    answer for slices that start anywhere: a sign flip differs, -0.0 differs from 0.0, and NaN
    equals the same NaN."""
    a = torch.randn(1001, generator=torch.Generator().manual_seed(0)).bfloat16()
    b = a.clone()
    assert same_bits(a[start:], b[start:]) and same_bits(a[start:999], b[start:999])
    b[700] = -b[700]
    assert not same_bits(a[start:], b[start:])
    zero = torch.zeros(9)
    assert not same_bits(zero[start:], -zero[start:])
    nan = torch.full((9,), float("nan"), dtype=torch.float16)
    assert same_bits(nan[start:], nan.clone()[start:])
