"""`medmerge mechanism` end to end on the tiny base: every table, plot and control is there."""

from __future__ import annotations

import json

import pytest

from helpers.factories import make_adapter, medmerge_manifest
from medmerge.errors import ConfigError
from medmerge.mechanism.config import MechanismConfig
from medmerge.mechanism.run import run_mechanism


@pytest.fixture(scope="module")
def pair(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("mechanism")
    lora = dict(r=4, lora_alpha=8, target_modules="all-linear")
    pt = make_adapter(tiny_base, root / "pt", 1, medmerge_manifest(tiny_base), **lora)
    sft = make_adapter(tiny_base, root / "sft", 2, medmerge_manifest(tiny_base), **lora)
    return pt, sft


def config(tiny_base, pair, repo, tmp_path, **overrides) -> MechanismConfig:
    values = {
        "base": str(tiny_base),
        "adapters": [{"path": str(pair[0]), "label": "pt"}, {"path": str(pair[1]), "label": "sft"}],
        "prompts": {
            "name": "meqsum",
            "data": str(repo / "data/qa_en/meqsum_sample.jsonl"),
            "format": "columns",
            "columns": {"prompt": "question", "reference": "summary"},
            "offset": 200,
            "limit": 6,
        },
        "mcq": {
            "name": "hq",
            "data": [str(repo / "data/mcq_en/dev_HEAD_EN.json")],
            "include_ids": ["Cuaderno_2015_1_M"],
            "limit": 6,
        },
        "decoding": {"preset": "A", "max_new_tokens": 6},
        "suppression": {"k": 2, "controls": 1},
        "logit_shift": {"gammas": [0.5], "controls": 1},
        "out": str(tmp_path / "mech"),
        "progress": False,
    }
    return MechanismConfig(**{**values, **overrides})


def test_mechanism_writes_layers_probes_and_each_intervention_beside_its_controls(
    tiny_base, pair, repo, tmp_path
):
    cfg = config(tiny_base, pair, repo, tmp_path)
    assert run_mechanism(cfg) == 0
    out = tmp_path / "mech"
    result = json.loads((out / "mechanism.json").read_text())
    assert [row["layer"] for row in result["layers"]] == [0, 1]  # the 2 decoder layers
    for row in result["layers"]:
        for key in ("cka_merged_sft", "cka_merged_pt", "cka_sft_base", "cka_pt_base"):
            assert -1e-9 <= row[key] <= 1 + 1e-9
        assert 0 < row["shift_top1_share"] <= 1
    assert result["n_prompts"] == 6
    if result["probes_skipped"]:  # 6 outputs cannot hold 5 of each kind
        assert "a probe needs at least 5 of each kind" in result["probes_skipped"]
    suppression = result["suppression"]
    assert suppression["layers"] == [1, 1] and len(suppression["controls"]) == 1
    assert suppression["unchanged"]["n"] == 6 and 0 <= suppression["suppressed"]["p"] <= 1
    shift = result["logit_shift"]
    assert shift["n"] == 6 and len(shift["rows"]) == 1 and len(shift["rows"][0]["controls"]) == 1
    assert {p.name for p in out.iterdir()} >= {
        "layers.csv",
        "layers.png",
        "interventions.png",
        "mechanism.json",
        "medmerge_manifest.json",
    }
    with pytest.raises(Exception, match="exists"):
        run_mechanism(cfg)  # a finished folder is kept without --force


def test_mechanism_refuses_vllm_and_a_bad_layer_range(tiny_base, pair, repo, tmp_path):
    with pytest.raises(ValueError, match="backend hf"):
        config(tiny_base, pair, repo, tmp_path, backend="vllm")
    with pytest.raises(ValueError, match=r"\[first, last\]"):
        config(tiny_base, pair, repo, tmp_path, suppression={"layers": [1, 0]})
    beyond = config(tiny_base, pair, repo, tmp_path, suppression={"layers": [0, 2]}, mcq=None)
    with pytest.raises(ConfigError, match=r"the model has 2 layers \(0\.\.1\)"):
        run_mechanism(beyond)
    assert not (tmp_path / "mech").exists()


def test_the_cli_refuses_vllm_in_one_line_and_writes_nothing(tiny_base, pair, tmp_path):
    from helpers.cli import assert_user_error, run_cli

    yaml = tmp_path / "mechanism.yaml"
    yaml.write_text(
        f"base: {tiny_base}\nadapters: [{{path: {pair[0]}, label: pt}}, "
        f"{{path: {pair[1]}, label: sft}}]\nbackend: vllm\n"
        f"prompts: {{name: q, data: {tmp_path / 'missing.jsonl'}}}\nout: {tmp_path / 'o'}\n"
    )
    assert_user_error(run_cli("mechanism", "--config", str(yaml)), "backend hf")
    assert not (tmp_path / "o").exists()
