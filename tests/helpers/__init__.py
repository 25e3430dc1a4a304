"""Helpers any test may import (`pythonpath = ["tests"]` in the pytest config)."""

from __future__ import annotations

from pathlib import Path


def assert_one_error(code: int, err: str, *needles: str, exit_code: int = 2) -> str:
    """The CLI's contract for bad input: exit 2, exactly one `medmerge: error:` line holding
    every needle, and no traceback. Returns that line."""
    assert code == exit_code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("medmerge: error:")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def merge_argv(base: Path, pt: Path, sft: Path, out: Path, *extra: str) -> list[str]:
    """`medmerge merge` of the PT adapter at 0.3 and the SFT adapter at 0.7."""
    return [
        "merge",
        "--base",
        str(base),
        "--adapter",
        f"{pt}=0.3",
        "--adapter",
        f"{sft}=0.7",
        "--out",
        str(out),
        *extra,
    ]


def verify_argv(base: Path, merged: Path, *extra: str) -> list[str]:
    """`medmerge verify` of `merged` against `base` (adapters and options in `extra`)."""
    return ["verify", "--base", str(base), "--merged", str(merged), *extra]


def tiny_qwen3_config(**overrides):
    """A 2-layer Qwen3 config (hidden 32, 4 heads of 8, untied); `overrides` change any field."""
    from transformers import Qwen3Config

    values = dict(
        vocab_size=1024,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=False,
    )
    return Qwen3Config(**{**values, **overrides})


def write_sweep_table(run: Path, rows: list[dict]) -> Path:
    """`run/sweep/table.json` as `medmerge sweep` writes it, for `rows` of a pt/sft grid with no
    feasible recommendation."""
    import json

    table = {
        "rows": rows,
        "pareto": [],
        "adapters": ["pt", "sft"],
        "recommendation": {"point": None, "rule": "none feasible"},
    }
    path = run / "sweep" / "table.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table))
    return path
