"""The loss with logits at the scored positions only equals the model's own loss, and so
do its gradients, across families, under LoRA, with padding, masked prompts and packing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from helpers.magnitudes import tiny_config
from medmerge.train.scored_loss import IGNORE_INDEX, scored_loss


def _model(arch: str, **overrides):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    return model.float().eval()  # eval: no dropout, so both losses see the same network


def _batch(vocab: int) -> dict[str, torch.Tensor]:
    """Three right-padded rows: a prompt masked out of the labels, then an answer; the last
    row is two packed documents whose positions restart."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 14), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 11:] = 0
    labels = ids.clone()
    labels[:, :5] = IGNORE_INDEX
    labels[0, 11:] = IGNORE_INDEX
    labels[2, 7:9] = IGNORE_INDEX  # the second document's start and its prompt token
    positions = torch.arange(14).repeat(3, 1)
    positions[2, 7:] = torch.arange(7)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions}


def _loss_and_grads(model, loss_fn, batch):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize(
    "arch, overrides, lora",
    [
        ("llama", {}, False),
        ("llama", {}, True),
        ("gpt2", {}, True),
        ("gemma3", {"final_logit_softcapping": 0.05}, False),  # capping after the output layer
    ],
)
def test_scored_loss_and_gradients_equal_the_models_own(arch, overrides, lora):
    model = _model(arch, **overrides)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        for name, parameter in model.named_parameters():  # B = 0 at init: give it a gradient path
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.02)
    batch = _batch(model.config.vocab_size)
    want, want_grads = _loss_and_grads(model, lambda b: model(**b).loss, batch)
    got, got_grads = _loss_and_grads(model, scored_loss(model), batch)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert want_grads.keys() == got_grads.keys() and want_grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-9, msg=name)
    if overrides.get("final_logit_softcapping"):  # the capping bites, so equality shows it kept
        uncapped = _model(arch)
        assert abs(float(uncapped(**batch).loss) - float(want)) > 1e-3


def test_the_output_layer_sees_the_scored_positions_only():
    model = _model("llama")
    batch = _batch(model.config.vocab_size)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(tuple(out.shape))
    )
    scored_loss(model)(batch)
    hook.remove()
    scored = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    assert seen == [(1, scored, model.config.vocab_size)] and scored < 3 * 14


def test_a_router_loss_keeps_the_models_own_loss():
    model = _model("moe", output_router_logits=True, router_aux_loss_coef=0.5)
    batch = _batch(model.config.vocab_size)
    own = float(model(**batch).loss)
    assert float(scored_loss(model)(batch)) == own  # the same call, aux loss included
    plain = _model("moe")
    assert abs(float(plain(**batch).loss) - own) > 1e-4  # the router loss is in it


def test_a_model_that_bypasses_its_output_layer_keeps_its_own_loss():
    model = _model("llama")
    batch = _batch(model.config.vocab_size)
    own = float(model(**batch).loss)

    class Elsewhere:  # an output layer the forward never calls
        config = model.config

        @staticmethod
        def get_output_embeddings():
            return torch.nn.Linear(4, 4)

    loss = scored_loss(model, head_of=Elsewhere())
    assert [float(loss(batch)), float(loss(batch))] == [own, own]
