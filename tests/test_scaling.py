"""docs/scaling.md's memory figures follow from the formulas in medmerge.scaling."""

from __future__ import annotations

from pathlib import Path

from medmerge import scaling

DOC = Path(__file__).resolve().parents[1] / "docs" / "scaling.md"


def test_doc_table_is_the_formulas_output():
    assert scaling.table() in DOC.read_text(encoding="utf-8")


def test_parameter_counts_match_the_published_sizes():
    # Published totals: Qwen2.5-7B 7.62 B, Qwen3-14B 14.8 B, Qwen3-32B 32.8 B.
    assert round(scaling.QWEN_7B.parameters() / 1e9, 2) == 7.62
    assert round(scaling.QWEN3_14B.parameters() / 1e9, 1) == 14.8
    assert round(scaling.QWEN3_32B.parameters() / 1e9, 1) == 32.8


def test_lora_parameters_by_hand():
    tiny = scaling.Shape(
        "t", hidden=4, layers=2, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10
    )
    # in+out: q 4+4, k 4+2, v 4+2, o 4+4, gate 4+8, up 4+8, down 8+4 = 64.
    assert tiny.lora_parameters(rank=3) == 2 * 3 * 64


def test_zero3_shards_the_weights():
    ddp = scaling.lora_training_bytes(scaling.QWEN3_14B, scaling.TrainSetup(zero_stage=0))
    zero3 = scaling.lora_training_bytes(scaling.QWEN3_14B, scaling.TrainSetup(zero_stage=3))
    assert zero3["weights"] * 8 == ddp["weights"]
    assert zero3["activations"] == ddp["activations"]
