"""CKA and shift PCA against independent computations (numpy, the HSIC form of CKA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import tiny_qwen3_config
from medmerge.mechanism.representations import (
    cka_per_layer,
    last_token_states,
    linear_cka,
    shift_pca,
)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA through Gram matrices and the centring matrix H: tr(KHLH) / sqrt(...)."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    gram_x, gram_y = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    cross = np.sum(gram_x * gram_y)
    return float(cross / np.sqrt(np.sum(gram_x * gram_x) * np.sum(gram_y * gram_y)))


def test_cka_equals_the_gram_matrix_form_and_is_one_for_itself():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    y = x @ rng.normal(size=(12, 9)) + 0.5 * rng.normal(size=(60, 9))
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    assert linear_cka(torch.tensor(x), torch.tensor(x)) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_rotation_and_scale_and_low_for_unrelated_states():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(200, 16)))
    rotation, _ = torch.linalg.qr(torch.tensor(rng.normal(size=(16, 16))))
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-10)
    unrelated = torch.tensor(rng.normal(size=(200, 16)))
    assert linear_cka(x, unrelated) < 0.2  # measured 0.08 for this seed


def test_shift_pca_finds_a_planted_direction():
    rng = np.random.default_rng(2)
    reference = torch.tensor(rng.normal(size=(100, 20)))
    planted = torch.zeros(20, dtype=torch.float64)
    planted[3] = 0.6
    planted[7] = 0.8
    coefficients = torch.tensor(rng.normal(size=(100, 1))) * 5
    merged = reference + coefficients * planted + 0.01 * torch.tensor(rng.normal(size=(100, 20)))
    result = shift_pca(merged, reference, k=3)
    assert result.explained[0] > 0.99
    assert abs(float(result.directions[0] @ planted)) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(
        result.directions @ result.directions.T, torch.eye(3, dtype=torch.float64)
    )


def test_states_of_a_model_compared_with_itself_are_cka_one_per_layer():
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(tiny_qwen3_config(vocab_size=64)).eval()

    class Tok:
        pad_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1 + ord(c) % 60 for c in text]}

    prompts = ["ab " * (1 + i % 3) + f"item {chr(97 + i)}" for i in range(12)]
    states = last_token_states(model, Tok(), prompts, batch_size=5)
    assert states.shape == (3, 12, 32)  # embeddings + 2 layers
    one_by_one = last_token_states(model, Tok(), prompts, batch_size=1)
    assert torch.allclose(states, one_by_one, atol=1e-5)  # left padding changes nothing
    assert cka_per_layer(states, states) == pytest.approx([1.0] * 3, abs=1e-12)
