"""Interventions: suppressing a planted direction removes its effect, random controls do not;
the logit intervention moves every logit by gamma · W_U v̂."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen3ForCausalLM

from helpers import tiny_qwen3_config
from medmerge.mechanism.interventions import (
    decoder_layers,
    mean_difference,
    random_directions,
    shift_final_state,
    suppress_subspace,
)

IDS = torch.tensor([[3, 9, 27, 14, 5, 11, 2, 8]])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Qwen3ForCausalLM(tiny_qwen3_config(vocab_size=64)).double().eval()


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def plant(model, direction, scale=4.0):
    """A hook on layer 0 that adds `scale * direction` to its output: the planted effect."""

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (output[0] + scale * direction, *output[1:])
        return output + scale * direction

    return decoder_layers(model)[0].register_forward_hook(hook)


def test_suppressing_the_planted_direction_removes_its_effect_and_a_random_one_does_not(model):
    direction = random_directions(1, 32, seed=5)[0]
    control = random_directions(1, 32, seed=6)
    clean = logits(model)
    handle = plant(model, direction)
    try:
        planted = logits(model)
        with suppress_subspace(model, {0: direction[None]}):
            suppressed = logits(model)
        with suppress_subspace(model, {0: control}):
            controlled = logits(model)
    finally:
        handle.remove()
    with suppress_subspace(model, {0: direction[None]}):
        clean_suppressed = logits(model)
    with suppress_subspace(model, {0: control}):
        clean_controlled = logits(model)
    effect = (planted - clean).norm()
    assert effect > 1.0
    # with the planted direction projected out, planting it changes nothing
    assert (suppressed - clean_suppressed).norm() < 1e-9 * effect
    # a random direction of the same size leaves most of the planted effect in place
    assert (controlled - clean_controlled).norm() > 0.5 * effect
    assert torch.equal(logits(model), clean)  # hooks gone after the blocks


def test_the_logit_intervention_moves_logits_by_gamma_times_the_unembedded_direction(model):
    direction = torch.randn(32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    base = logits(model)
    with shift_final_state(model, direction * 3.0, gamma=0.7):
        shifted = logits(model)
    expected = 0.7 * model.lm_head.weight @ (direction / direction.norm())
    torch.testing.assert_close(shifted - base, expected.expand_as(base), atol=1e-10, rtol=0)
    assert torch.equal(logits(model), base)


def test_decoder_layers_found_on_gpt2_and_bad_ranges_refused(model):
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=16, n_head=2, vocab_size=50))
    assert decoder_layers(gpt2) is gpt2.transformer.h
    with (
        pytest.raises(ValueError, match=r"layers \[2\] outside 0\.\.1"),
        suppress_subspace(model, {1: torch.eye(32)[:1], 2: torch.eye(32)[:1]}),
    ):
        pass


def test_random_directions_are_orthonormal_and_the_mean_difference_is_the_means():
    basis = random_directions(4, 32, seed=0)
    torch.testing.assert_close(basis @ basis.T, torch.eye(4, dtype=torch.float64))
    positive = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    negative = torch.tensor([[0.0, 1.0]])
    assert mean_difference(positive, negative).tolist() == [2.0, 2.0]
