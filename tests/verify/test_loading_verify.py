"""Verify's behaviour check loads through medmerge.loading: a merged folder that does not load
faithfully fails verification (exit 1) with the reason, instead of comparing random logits."""

from __future__ import annotations

import json

from safetensors.torch import load_file, save_file

from helpers.factories import merge_models
from medmerge.cli import main
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify


def test_merged_folder_missing_a_tensor_fails_with_the_reason(models, tmp_path, capsys):
    merged = merge_models(models, tmp_path / "merged")
    name = "model.norm.weight"
    shard = next(f for f in sorted(merged.glob("*.safetensors")) if name in load_file(f))
    state = load_file(shard)
    del state[name]
    save_file(state, shard, metadata={"format": "pt"})
    index = merged / "model.safetensors.index.json"
    if index.is_file():
        recorded = json.loads(index.read_text())
        del recorded["weight_map"][name]
        index.write_text(json.dumps(recorded))

    report = verify(VerifyConfig(base=str(models["base"]), merged=str(merged)))
    assert not report["ok"]
    assert f"1 missing from the checkpoint: {name}" in report["behaviour"]["load_error"]
    assert report["behaviour"]["top1_agreement"] == 0.0
    (merged / "verify.json").unlink(missing_ok=True)
    assert main(["verify", "--base", str(models["base"]), "--merged", str(merged)]) == 1
    assert "medmerge: error:" not in capsys.readouterr().err
