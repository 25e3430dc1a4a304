"""Packed SFT trains under document attention, with the losses of the 4-D block mask."""

from __future__ import annotations

import contextlib
import json

from medmerge.train import document_attention as attention_module
from medmerge.train import loop, micro_batch
from medmerge.train.loop import train


def _losses(out) -> list[float]:
    lines = (out / "loss_log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def test_packed_sft_losses_equal_the_block_mask_and_sdpa_comes_back(make_cfg, monkeypatch):
    seen = []
    real = attention_module.document_sdpa

    def spy(*args, **kwargs):
        seen.append(attention_module.document_spans(kwargs["position_ids"]) is not None)
        return real(*args, **kwargs)

    monkeypatch.setitem(
        attention_module.AttentionInterface._global_mapping, "medmerge_document", spy
    )
    # no LoRA dropout: its masks are drawn by the batch's shape, which joining the rows changes
    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    packed = dict(stage="sft", packing=True, cutoff_len=128, max_steps=3, save_steps=100, lora=lora)
    cuts = []
    real_pieces = micro_batch.pieces
    monkeypatch.setattr(micro_batch, "PIECE_TOKENS", 256)  # steps of ~500 tokens in pieces
    monkeypatch.setattr(micro_batch, "pieces", lambda b: cuts.append(real_pieces(b)) or cuts[-1])
    result = train(make_cfg(name="per-document", **packed))
    assert any(seen)  # batches of several examples per row were split into documents
    assert len(cuts) == 3 and all(len(c) >= 2 for c in cuts), cuts  # each step ran in pieces
    assert result.model.get_base_model().config._attn_implementation == "sdpa"

    @contextlib.contextmanager
    def block_mask_only(model, packed):
        yield False

    monkeypatch.setattr(loop, "document_attention", block_mask_only)
    reference = train(make_cfg(name="block-mask", **packed))
    got, want = _losses(result.out), _losses(reference.out)
    assert len(got) == 3
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-5, (got, want)
