"""A packed step run in pieces has the whole step's loss and gradients."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

import medmerge.train.document_attention  # noqa: F401  registers medmerge_document
from helpers.magnitudes import tiny_config
from medmerge.data.packing import collate, pack
from medmerge.train.micro_batch import IGNORE_INDEX, backward_in_pieces, pieces
from medmerge.train.scored_loss import scored_loss


def _documents(lengths: list[int], vocab: int) -> list[dict[str, list[int]]]:
    """SFT-like examples: a prompt (labels -100, the first always) and a scored reply."""
    generator = torch.Generator().manual_seed(3)
    examples = []
    for size in lengths:
        ids = torch.randint(0, vocab, (size,), generator=generator).tolist()
        labels = [IGNORE_INDEX] * (size // 3) + ids[size // 3 :]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def test_pieces_cut_at_document_starts_within_the_budget():
    positions = torch.tensor([[*range(5), *range(3), *range(9), *range(2), *range(4)]])
    batch = {"position_ids": positions}
    # documents [0,5) [5,8) [8,17) [17,19) [19,23)
    assert pieces(batch, 8) == [slice(0, 8), slice(8, 17), slice(17, 23)]
    assert pieces(batch, 100) == [slice(0, 23)]
    one_each = [slice(0, 5), slice(5, 8), slice(8, 17), slice(17, 19), slice(19, 23)]
    assert pieces(batch, 2) == one_each
    assert pieces({"position_ids": torch.arange(6).repeat(2, 1)}, 2) == [slice(None)]
    assert pieces({"input_ids": torch.zeros(1, 6)}, 2) == [slice(None)]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_a_step_in_pieces_has_the_whole_steps_loss_and_gradients(monkeypatch):
    torch.manual_seed(0)
    config = tiny_config("llama", attn_implementation="medmerge_document")
    base = AutoModelForCausalLM.from_config(config).float()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, lora).train()
    rows = pack(_documents([40, 23, 31, 12, 50, 7, 19], config.vocab_size), 64)
    batch = collate(rows, 0, document_attention=True)
    assert batch["input_ids"].shape[0] == 1
    compute_loss = scored_loss(model)
    accelerator = Accelerator(cpu=True)

    whole = backward_in_pieces(batch, compute_loss, accelerator, model, split=False)
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    calls = []
    monkeypatch.setattr("medmerge.train.micro_batch.PIECE_TOKENS", 64)
    counted = lambda piece: calls.append(piece["input_ids"].shape[1]) or compute_loss(piece)  # noqa: E731
    split = backward_in_pieces(batch, counted, accelerator, model, split=True)
    got = _grads(model)

    assert len(calls) >= 3 and sum(calls) == batch["input_ids"].shape[1], calls
    assert max(calls) <= 64
    torch.testing.assert_close(split, whole, rtol=1e-6, atol=0)
    for name, grad in want.items():
        scale = grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-5 * scale, msg=name)
    # Control: unweighted piece means are another loss (the pieces hold unequal token counts).
    plain = sum(compute_loss({k: v[:, r] for k, v in batch.items()}) for r in pieces(batch, 64))
    assert abs(plain.item() / len(calls) - whole.item()) > 1e-4
