"""Every refusal: exit status 2 and one line naming what, where and how to fix; nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers.factories import make_adapter, make_base, medmerge_manifest
from medmerge.cli import main


def _merge(models, out, *adapters, extra=()):
    argv = ["merge", "--base", str(models["base"]), "--out", str(out), "--no-verify", *extra]
    for adapter in adapters:
        argv += ["--adapter", f"{adapter}=0.5"]
    return main(argv)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _edited_copy(src, dst, edit):
    shutil.copytree(src, dst)
    state = load_file(dst / "adapter_model.safetensors")
    edit(state)
    save_file(state, dst / "adapter_model.safetensors")
    return dst


def test_foreign_adapter_by_recorded_identity(models, tmp_path, capsys):
    other = make_base(tmp_path / "other", seed=9)
    foreign = make_adapter(
        other,
        tmp_path / "foreign",
        seed=3,
        manifest=medmerge_manifest(other),
        r=2,
        target_modules=["q_proj"],
    )
    capsys.readouterr()
    assert _merge(models, tmp_path / "out", foreign) == 2
    line = _one_line(capsys)
    assert (
        "foreign" in line and "weights differ" in line and "pass the base it was trained on" in line
    )
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".medmerge-tmp-*"))


def test_foreign_adapter_by_shape(models, tmp_path, capsys):
    other = make_base(tmp_path / "other", seed=9, intermediate_size=96)
    foreign = make_adapter(other, tmp_path / "foreign", seed=3, r=2, target_modules=["up_proj"])
    capsys.readouterr()
    assert _merge(models, tmp_path / "out", foreign) == 2
    assert "model.layers.0.mlp.up_proj.weight" in _one_line(capsys)


def test_key_matching_no_base_tensor(models, tmp_path, capsys):
    def rename(state):
        for key in [k for k in state if "layers.1.self_attn.q_proj" in k]:
            state[key.replace("q_proj", "qq_proj")] = state.pop(key)

    bad = _edited_copy(models["pt"], tmp_path / "bad", rename)
    assert _merge(models, tmp_path / "out", bad) == 2
    assert "base has no such tensor" in _one_line(capsys)


def test_nan_in_adapter(models, tmp_path, capsys):
    def poison(state):
        key = next(k for k in state if "lora_B" in k)
        state[key][0, 0] = float("nan")

    bad = _edited_copy(models["pt"], tmp_path / "bad", poison)
    assert _merge(models, tmp_path / "out", bad) == 2
    assert "NaN or Inf" in _one_line(capsys)


def test_existing_out_needs_force(models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("finished artifact")
    assert _merge(models, out, models["pt"]) == 2
    assert "--force" in _one_line(capsys)
    assert (out / "keep.txt").read_text() == "finished artifact"
    assert _merge(models, out, models["pt"], extra=["--force"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_unknown_method_did_you_mean(models, tmp_path, capsys):
    assert _merge(models, tmp_path / "out", models["pt"], extra=["--method", "linaer"]) == 2
    assert "did you mean 'linear'" in _one_line(capsys)


def test_dora_refused(models, tmp_path, capsys):
    dora = make_adapter(
        models["base"], tmp_path / "dora", seed=4, r=2, target_modules=["q_proj"], use_dora=True
    )
    capsys.readouterr()
    assert _merge(models, tmp_path / "out", dora) == 2
    assert "use_dora" in _one_line(capsys)


def test_pickle_adapter_needs_allow_pickle(models, tmp_path, capsys):
    pickled = tmp_path / "pickled"
    shutil.copytree(models["pt"], pickled)
    state = load_file(pickled / "adapter_model.safetensors")
    (pickled / "adapter_model.safetensors").unlink()
    torch.save(state, pickled / "adapter_model.bin")
    assert _merge(models, tmp_path / "out", pickled) == 2
    assert "--allow-pickle" in _one_line(capsys)
    assert _merge(models, tmp_path / "out", pickled, extra=["--allow-pickle"]) == 0


@pytest.mark.parametrize("section", [None, "merge"])
def test_yaml_config(models, tmp_path, section):
    body = {
        "base": str(models["base"]),
        "out": str(tmp_path / "out"),
        "verify": False,
        "adapters": [
            {"path": str(models["pt"]), "weight": 0.3},
            {"path": str(models["sft"]), "weight": 0.7},
        ],
    }
    import yaml

    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump({section: body} if section else body))
    argv = ["merge", "--config", str(config)] + (["--section", section] if section else [])
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "out" / "medmerge_manifest.json").read_text())
    assert [a["weight"] for a in manifest["adapters"]] == [0.3, 0.7]
