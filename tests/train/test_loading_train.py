"""Training refuses a base it could not load faithfully, before it writes anything it can."""

from __future__ import annotations

import json
import shutil

from safetensors.torch import load_file, save_file

from medmerge.cli import main


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("medmerge: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def _train(base, data, out) -> list[str]:
    return ["train", "pt", "--base", str(base), "--data", str(data), "--out", str(out)]


def test_base_missing_a_tensor_is_not_trained_from_random_init(
    tiny_base, pt_file, tmp_path, capsys
):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    state = load_file(base / "model.safetensors")
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, base / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "pt"
    assert main([*_train(base, pt_file, out), "--max-steps", "1"]) == 2
    line = _error_line(capsys)
    assert "missing from the checkpoint: model.layers.1.mlp.down_proj.weight" in line
    assert not out.exists()


def test_encoder_decoder_or_remote_code_base_is_refused_before_any_output(
    tiny_base, pt_file, tmp_path, capsys
):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    for changed, needle in (
        ({"model_type": "t5"}, "model_type 't5' is not a causal language model"),
        ({"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}, "modeling_x.py"),
    ):
        (base / "config.json").write_text(json.dumps({**config, **changed}))
        out = tmp_path / "pt"
        assert main(_train(base, pt_file, out)) == 2
        assert needle in _error_line(capsys)
        assert not out.exists() and not list(tmp_path.glob("pt*"))  # no OUT.partial either
