"""Every shipped config parses against its stage's schema; config errors are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmerge.base import BaseBuildConfig
from medmerge.config import build_config, read_yaml
from medmerge.errors import ConfigError
from medmerge.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _schema_for(path: Path):
    """Pick the schema from the file: stage configs say `stage:`, the base config is base.yaml."""
    from medmerge.merge import MergeConfig

    if path.name == "base.yaml":
        return BaseBuildConfig, None
    if path.name == "pipeline.yaml":
        from medmerge.pipeline import PipelineConfig

        return PipelineConfig, None
    if path.name == "sweep.yaml":
        return "sweep", None
    values = read_yaml(path)
    if "stage" in values:
        return TrainConfig, None
    if "merged" in values:
        from medmerge.verify import VerifyConfig

        return VerifyConfig, None
    if "adapters" in values:
        return MergeConfig, None
    raise AssertionError(f"{path}: no schema known for this shipped config; add it here")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_parses(path):
    schema, section = _schema_for(path)
    if schema == "sweep":
        from medmerge.sweep.config import build_sweep_config

        build_sweep_config(path, {"out": "sweep-out"})  # the pipeline gives the out folder
        return
    cfg = build_config(schema, path, section=section)
    for name in schema.path_fields:
        value = getattr(cfg, name)
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            item_path = item if isinstance(item, str) else item.path
            assert Path(item_path).is_absolute(), f"{name} should resolve against the config file"


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    config = tmp_path / "sub" / "pt.yaml"
    config.write_text("stage: pt\nbase: ../model\ndata: [texts.txt]\nout: out\n")
    cfg = build_config(TrainConfig, config)
    assert cfg.base == str(tmp_path / "model")
    assert cfg.data == [str(tmp_path / "sub" / "texts.txt")]


def test_all_problems_reported_at_once_with_did_you_mean(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text(
        "stage: sft\nbase: b\ndata: [d]\nout: o\nlearning_rat: 1e-4\nlora:\n  rank: 8\nbatch_size: 0\n"
    )
    with pytest.raises(ConfigError) as caught:
        build_config(TrainConfig, config)
    message = str(caught.value)
    assert "'learning_rat' (did you mean 'learning_rate'?)" in message
    assert "'lora.rank'" in message
    assert "batch_size" in message
    assert "\n" not in message


def test_cli_flags_override_the_file(tmp_path):
    config = tmp_path / "pt.yaml"
    config.write_text("stage: pt\nbase: b\ndata: [d]\nout: o\nseed: 1\nlora: {r: 4}\n")
    cfg = build_config(TrainConfig, config, {"seed": 5, "lora.r": 16, "max_steps": None})
    assert (cfg.seed, cfg.lora.r, cfg.max_steps) == (5, 16, None)


def test_invalid_yaml_names_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("stage: pt\nbase: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        build_config(TrainConfig, config)
