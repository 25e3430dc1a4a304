"""Malformed adapters, checkpoints and indexes: exit 2 and one line naming file, tensor and fix.

Each case copies the session's base and PT adapter, breaks one thing, and runs
`medmerge merge` (or `verify`) in-process; a traceback or exit 1 would read as "verification
failed" or a bug.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import assert_one_error
from medmerge.cli import main

INDEX = "model.safetensors.index.json"


def _one_error(code: int, capsys, *needles: str) -> str:
    return assert_one_error(code, capsys.readouterr().err, *needles)


def _edit_json(file: Path, edit) -> None:
    value = json.loads(file.read_text("utf-8"))
    file.write_text(json.dumps(edit(value) or value), "utf-8")


def _edit_tensors(file: Path, edit) -> None:
    state = load_file(file)
    edit(state)
    save_file(state, file)


def _edit_header(file: Path, edit) -> None:
    """Rewrite a safetensors header in place (the data bytes stay as they were)."""
    raw = file.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])


def _first_shard(base: Path) -> Path:
    return sorted(base.glob("*.safetensors"))[0]


def _loop(file: Path) -> None:
    file.unlink()
    os.symlink(file.name, file)


def _prefix_bom(file: Path) -> None:
    file.write_bytes(b"\xef\xbb\xbf" + file.read_bytes())


def _set_config(**values):
    return lambda w: _edit_json(w["pt"] / "adapter_config.json", lambda c: c.update(values))


def _factors(dtype, scale: float = 1.0):
    def edit(state):
        for key in state:
            state[key] = (state[key].float() * scale).to(dtype)

    return lambda w: _edit_tensors(w["pt"] / "adapter_model.safetensors", edit)


def _nan(state):
    key = next(k for k in state if "lora_B" in k)
    state[key][0, 0] = float("nan")


def _index_entry(shard: str):
    def edit(index):
        index["weight_map"][next(iter(index["weight_map"]))] = shard

    return lambda w: _edit_json(w["base"] / INDEX, edit)


def _header_more_bytes(w):
    def edit(header):
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"][1] += 10**6

    _edit_header(_first_shard(w["base"]), edit)


def _header_length(value: int):
    def apply(w):
        shard = _first_shard(w["base"])
        raw = shard.read_bytes()
        shard.write_bytes(struct.pack("<Q", value) + raw[8:])

    return apply


def _truncate(w):
    shard = _first_shard(w["base"])
    shard.write_bytes(shard.read_bytes()[:-1000])


FAULTS = {
    # adapter_config.json
    "alpha-string": (_set_config(lora_alpha="16"), ("adapter_config.json", "lora_alpha", "'16'")),
    "r-string": (_set_config(r="8"), ("adapter_config.json", "r must be a positive integer")),
    "alpha-pattern-regex": (
        _set_config(alpha_pattern={"q_proj(": 3}),
        ("alpha_pattern", "'q_proj('", "not a valid regex"),
    ),
    "rank-pattern-regex": (
        _set_config(rank_pattern={"[q": 2}),
        ("rank_pattern", "not a valid regex"),
    ),
    "alpha-pattern-list": (_set_config(alpha_pattern=["k_proj"]), ("alpha_pattern", "map")),
    "alpha-pattern-value": (
        _set_config(alpha_pattern={"k_proj": "3"}),
        ("alpha_pattern['k_proj']", "number"),
    ),
    "target-modules-int": (_set_config(target_modules=3), ("target_modules",)),
    "config-list": (
        lambda w: (w["pt"] / "adapter_config.json").write_text("[1, 2]"),
        ("adapter_config.json", "JSON object", "list"),
    ),
    "config-not-utf8": (
        lambda w: (w["pt"] / "adapter_config.json").write_bytes(b'{"r": 8, "x": "\xff"}'),
        ("adapter_config.json:1", "not UTF-8"),
    ),
    "config-symlink-loop": (
        lambda w: _loop(w["pt"] / "adapter_config.json"),
        ("adapter_config.json", "symbolic link"),
    ),
    # adapter tensors
    "factors-fp8": (_factors(torch.float8_e4m3fn), ("lora_", "float8_e4m3fn", "upcast")),
    "factors-int32": (_factors(torch.int32, 1000), ("lora_", "int32", "floating point")),
    "factors-nan": (
        lambda w: _edit_tensors(w["pt"] / "adapter_model.safetensors", _nan),
        ("NaN",),
    ),
    "weights-symlink-loop": (
        lambda w: _loop(w["pt"] / "adapter_model.safetensors"),
        ("adapter_model.safetensors", "symbolic link"),
    ),
    # the base's safetensors
    "header-claims-more": (_header_more_bytes, ("model-00001-of-", "claims bytes")),
    "header-length-1e15": (
        _header_length(10**15),
        ("model-00001-of-", "1,000,000,000,000,000", "re-download"),
    ),
    "header-length-past-end": (_header_length(10**7), ("model-00001-of-", "10,000,000")),
    "shard-truncated": (_truncate, ("model-00001-of-", "needs bytes up to", "re-download")),
    "shard-symlink-loop": (
        lambda w: _loop(_first_shard(w["base"])),
        ("model-00001-of-", "symbolic link"),
    ),
    # the base's index
    "index-bad-json": (
        lambda w: (w["base"] / INDEX).write_text('{"weight_map": '),
        (INDEX, "invalid JSON"),
    ),
    "index-no-weight-map": (
        lambda w: (w["base"] / INDEX).write_text('{"metadata": {}}'),
        (INDEX, "weight_map"),
    ),
    "index-parent-path": (
        _index_entry("../../x.safetensors"),
        (INDEX, "'../../x.safetensors'", "not a file of the model folder"),
    ),
    "index-absolute-path": (
        _index_entry("/etc/x.safetensors"),
        (INDEX, "'/etc/x.safetensors'", "not a file of the model folder"),
    ),
    "index-subfolder": (_index_entry("sub/x.safetensors"), (INDEX, "'sub/x.safetensors'")),
    "index-missing-shard": (_index_entry("gone.safetensors"), (INDEX, "gone.safetensors")),
    # the base's config.json
    "base-config-list": (
        lambda w: (w["base"] / "config.json").write_text("[]"),
        ("config.json", "JSON object"),
    ),
    "base-config-bom": (  # transformers' json.load fails on it, so medmerge says so up front
        lambda w: _prefix_bom(w["base"] / "config.json"),
        ("config.json", "byte-order mark"),
    ),
    "adapter-config-bom": (
        lambda w: _prefix_bom(w["pt"] / "adapter_config.json"),
        ("adapter_config.json", "byte-order mark"),
    ),
    "base-config-bad-json": (
        lambda w: (w["base"] / "config.json").write_text("{oops"),
        ("config.json:1", "invalid JSON"),
    ),
}


@pytest.fixture
def world(models, tmp_path) -> dict[str, Path]:
    """Private copies of the session base and PT adapter to break."""
    return {
        "base": Path(shutil.copytree(models["base"], tmp_path / "base")),
        "pt": Path(shutil.copytree(models["pt"], tmp_path / "pt")),
        "out": tmp_path / "out",
    }


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_merge_refuses_in_one_line(fault, world, capsys):
    breaks, needles = FAULTS[fault]
    breaks(world)
    argv = ["merge", "--base", str(world["base"]), "--adapter", f"{world['pt']}=0.5"]
    code = main([*argv, "--out", str(world["out"]), "--no-verify"])
    _one_error(code, capsys, *needles)
    assert not world["out"].exists()


@pytest.mark.parametrize("fault", ["shard-truncated", "header-claims-more", "alpha-string"])
def test_verify_refuses_in_one_line(fault, models, world, tmp_path, capsys):
    """The same faults in what verify reads: the merged folder and the adapters."""
    merged = Path(shutil.copytree(models["base"], tmp_path / "merged"))
    breaks, needles = FAULTS[fault]
    breaks({**world, "base": merged})
    argv = ["verify", "--base", str(models["base"]), "--merged", str(merged)]
    code = main([*argv, "--adapter", f"{world['pt']}=0.5", "--no-logits"])
    _one_error(code, capsys, *needles)
