"""medmerge.loading: no model runs on tensors it did not read from the folder it was given.

Each case is a tiny Qwen3 folder damaged one way. Stock transformers loads every one of
them (missing tensors randomly initialised, a BERT config over Qwen weights, NaN weights,
pickles) with at most a log line, which the CLI silences; the loader must refuse them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Qwen3ForCausalLM

from helpers import tiny_qwen3_config
from medmerge.errors import ModelError
from medmerge.loading import load_causal_lm, load_tokenizer, resolve_model_folder


def _qwen(folder: Path, tied: bool = False, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = tiny_qwen3_config(vocab_size=96, intermediate_size=48, tie_word_embeddings=tied)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def untied(tmp_path_factory) -> Path:
    return _qwen(tmp_path_factory.mktemp("loading") / "untied")


@pytest.fixture(scope="module")
def tied(tmp_path_factory) -> Path:
    return _qwen(tmp_path_factory.mktemp("loading") / "tied", tied=True)


def _copy(src: Path, tmp_path: Path, name: str = "model") -> Path:
    return Path(shutil.copytree(src, tmp_path / name))


def _edit_weights(folder: Path, edit) -> None:
    file = folder / "model.safetensors"
    state = load_file(file)
    edit(state)
    save_file(state, file, metadata={"format": "pt"})


def _edit_config(folder: Path, **changes) -> None:
    file = folder / "config.json"
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


def _stock(folder: Path):
    """What transformers alone does with the folder (the behaviour medmerge must not inherit)."""
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )


def test_complete_untied_model_loads_bit_for_bit(untied):
    model = load_causal_lm(untied, dtype=torch.float32)
    stored = load_file(untied / "model.safetensors")
    params = dict(model.named_parameters())
    assert set(params) == set(stored)
    assert all(torch.equal(params[n], t) for n, t in stored.items())


def test_untied_model_without_lm_head_is_refused(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    _edit_weights(folder, lambda s: s.pop("lm_head.weight"))
    assert _stock(folder)[1]["missing_keys"] == {"lm_head.weight"}  # loads, lm_head random
    with pytest.raises(ModelError, match=r"1 missing from the checkpoint: lm_head\.weight") as err:
        load_causal_lm(folder, dtype=torch.float32)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_tied_model_without_lm_head_loads_with_lm_head_equal_to_embeddings(tied):
    assert "lm_head.weight" not in load_file(tied / "model.safetensors")
    model = load_causal_lm(tied, dtype=torch.float32)
    embeddings = load_file(tied / "model.safetensors")["model.embed_tokens.weight"]
    assert torch.equal(model.lm_head.weight, embeddings)
    ids = torch.tensor([[1, 5, 9, 2]])
    stock = _stock(tied)[0].eval()
    assert torch.equal(model.eval()(ids).logits, stock(ids).logits)


def test_tied_config_with_a_different_stored_lm_head_keeps_the_stored_one(tied, tmp_path):
    """transformers 5.24 unties them rather than discard the stored head: nothing is random."""
    folder = _copy(tied, tmp_path)
    _edit_weights(
        folder, lambda s: s.update({"lm_head.weight": s["model.embed_tokens.weight"] + 1})
    )
    stored = load_file(folder / "model.safetensors")
    model = load_causal_lm(folder, dtype=torch.float32)
    assert torch.equal(model.lm_head.weight, stored["lm_head.weight"])
    assert torch.equal(model.model.embed_tokens.weight, stored["model.embed_tokens.weight"])


def test_missing_down_proj_is_refused_by_name(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    _edit_weights(folder, lambda s: s.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(
        ModelError, match=r"missing from the checkpoint: model\.layers\.1\.mlp\.down_proj\.weight"
    ):
        load_causal_lm(folder, dtype=torch.float32)


def test_unexpected_tensor_is_refused(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    _edit_weights(folder, lambda s: s.update({"model.layers.7.extra.weight": torch.zeros(3)}))
    with pytest.raises(
        ModelError, match=r"1 unexpected in the checkpoint: model\.layers\.7\.extra\.weight"
    ):
        load_causal_lm(folder, dtype=torch.float32)


def test_bert_config_over_qwen_weights_is_refused(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    bert = {"model_type": "bert", "vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2}
    (folder / "config.json").write_text(json.dumps({**bert, "num_attention_heads": 4}))
    report = _stock(folder)[1]  # BertLMHeadModel, every parameter random
    assert report["missing_keys"] and report["unexpected_keys"]
    with pytest.raises(
        ModelError,
        match=r"missing from the checkpoint: bert\..*unexpected in the checkpoint: lm_head\.weight",
    ):
        load_causal_lm(folder, dtype=torch.float32)


def test_config_of_another_size_names_the_reshaped_tensors(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    _edit_config(folder, intermediate_size=64)
    with pytest.raises(
        ModelError,
        match=r"of another shape: model\.layers\.0\.mlp\.down_proj\.weight \(32, 48\) in the checkpoint vs \(32, 64\) in config",
    ):
        load_causal_lm(folder, dtype=torch.float32)


def test_encoder_decoder_config_is_not_a_causal_lm(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 32}))
    with pytest.raises(ModelError, match=r"model_type 't5' is not a causal language model"):
        load_causal_lm(folder, dtype=torch.float32)


def test_unknown_model_type_is_one_line(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    _edit_config(folder, model_type="not-a-model")
    with pytest.raises(ModelError, match=r"model_type 'not-a-model' is unknown to transformers"):
        load_causal_lm(folder, dtype=torch.float32)


def test_remote_code_is_refused_and_never_run(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    marker = tmp_path / "ran"
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    _edit_config(
        folder, model_type="x", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    )
    with pytest.raises(
        ModelError,
        match=r"auto_map needs the model's own Python code \(modeling_x\.py\).*trust_remote_code",
    ):
        load_causal_lm(folder, dtype=torch.float32)
    _edit_config(folder, model_type="qwen3")  # a known type with auto_map: still refused
    with pytest.raises(ModelError, match=r"trust_remote_code"):
        load_causal_lm(folder, dtype=torch.float32)
    assert not marker.exists()


def test_pickle_only_folder_needs_allow_pickle(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(
        ModelError, match=r"only pickle weights \(pytorch_model\.bin\).*--allow-pickle"
    ):
        load_causal_lm(folder, dtype=torch.float32)
    model = load_causal_lm(folder, dtype=torch.float32, allow_pickle=True)
    assert torch.equal(model.lm_head.weight, state["lm_head.weight"])


def test_non_finite_weight_is_refused_with_its_count(untied, tmp_path):
    folder = _copy(untied, tmp_path)

    def poison(state):
        state["model.layers.0.self_attn.k_proj.weight"][0, :3] = float("nan")
        state["model.layers.0.self_attn.k_proj.weight"][1, 0] = float("inf")

    _edit_weights(folder, poison)
    with pytest.raises(
        ModelError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' holds 4 NaN/Inf values"
    ):
        load_causal_lm(folder, dtype=torch.float32)


def test_missing_local_path_never_reaches_transformers(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise AssertionError("transformers was asked to resolve a missing path")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fail)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"^runs/merged: no such model folder.*allow_hub"):
        load_causal_lm("runs/merged", dtype=torch.float32)
    with pytest.raises(ModelError, match=r"no such model folder"):
        load_tokenizer("runs/merged")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match=r"is a file, not a model folder"):
        load_causal_lm(tmp_path / "file", dtype=torch.float32)


def test_allow_hub_downloads_to_a_local_folder_first(monkeypatch, untied):
    import huggingface_hub

    asked = []

    def snapshot(repo_id, allow_patterns):
        asked.append((repo_id, allow_patterns))
        return str(untied)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    assert resolve_model_folder("org/model", allow_hub=True) == untied
    assert asked[0][0] == "org/model" and "*.bin" not in asked[0][1]


def test_config_with_a_byte_order_mark_is_one_line(untied, tmp_path):
    folder = _copy(untied, tmp_path)
    (folder / "config.json").write_bytes(b"\xef\xbb\xbf" + (untied / "config.json").read_bytes())
    with pytest.raises(ModelError, match=r"config\.json: starts with a UTF-8 byte-order mark"):
        load_causal_lm(folder, dtype=torch.float32)


def test_tokenizer_needs_a_vocabulary(tiny_base, untied, tmp_path):
    # Stock AutoTokenizer builds a 1-token tokenizer from a folder with no vocabulary file.
    with pytest.raises(ModelError, match=r"no tokenizer files"):
        load_tokenizer(untied)
    assert len(load_tokenizer(tiny_base)) == 1024


def test_tokenizer_remote_code_is_refused(tiny_base, tmp_path):
    folder = _copy(tiny_base, tmp_path)
    file = folder / "tokenizer_config.json"
    config = json.loads(file.read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    file.write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"tokenizer_config\.json: auto_map .*tokenization_x\.py"):
        load_tokenizer(folder)
