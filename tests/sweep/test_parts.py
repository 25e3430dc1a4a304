"""Pareto front, recommendation, think penalty and interference: hand-checked numbers."""

from __future__ import annotations

import torch

from medmerge.eval.backends.hf import ThinkPenalty
from medmerge.sweep.config import Recommendation
from medmerge.sweep.interference import principal_cosines, tensor_interference
from medmerge.sweep.pareto import pareto_front, recommend


def _row(pt, acc, bleu, think):
    return {
        "point": f"pt={pt}",
        "w_pt": pt,
        "w_sft": 1 - pt,
        "template": "t",
        "decoding": "d",
        "avg_accuracy": acc,
        "bleu4": bleu,
        "think_tag_rate": think,
    }


def test_pareto_and_recommendation():
    rows = [
        _row(0.0, 0.30, 20.0, 0.0),
        _row(0.3, 0.40, 19.5, 0.05),
        _row(0.6, 0.45, 10.0, 0.5),
        _row(1.0, 0.35, 9.0, 0.6),
    ]
    assert pareto_front(rows) == [0, 1, 2]  # 1.0 is dominated by 0.6
    rule = Recommendation(reference={"pt": 0.0, "sft": 1.0}, bleu_drop=1.0, max_think=0.1)
    choice = recommend(rows, rule)
    assert choice["point"] == "pt=0.3" and choice["feasible"] == 2
    assert choice["bleu_floors"] == {"t/d": 20.0}
    assert recommend(rows, Recommendation(max_think=-1))["point"] is None


def test_think_penalty_lowers_only_chosen_tokens():
    scores = torch.zeros(2, 5)
    out = ThinkPenalty([1, 3], 2.5)(None, scores)
    assert out[:, [1, 3]].eq(-2.5).all() and out[:, [0, 2, 4]].eq(0).all()
    assert scores.eq(0).all()


def test_principal_angles_and_cosine():
    e = torch.eye(4, dtype=torch.float64)
    a = torch.outer(e[0], e[1])  # rank 1, column space span(e0)
    b = torch.outer(e[1], e[2])  # column space span(e1): orthogonal
    assert principal_cosines(a, b).tolist() == [0.0]
    assert principal_cosines(a, 3 * a).tolist() == [1.0]
    row = tensor_interference("model.layers.2.mlp.up_proj.weight", 2 * e, a, a + b)
    assert row["layer"] == 2 and row["module"] == "mlp.up_proj"
    assert abs(row["cosine"] - 1 / 2**0.5) < 1e-12
    assert abs(row["rel_first"] - 1 / 4) < 1e-12
