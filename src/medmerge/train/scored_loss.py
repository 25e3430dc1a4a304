"""The causal-LM training loss with the output layer run only at the positions it scores.

`model(**batch).loss` runs the output layer (hidden size -> vocabulary) at every position,
then ignores every position whose next token is not a label: the prompt, the padding, a
packed row's document starts. In SFT that is most positions, and the logits are a step's
largest tensors: 4 rows x 512 positions x a 151,936-token Qwen3 vocabulary is 1.2 GB in
fp32, and as much again for their gradient. Here a pre-hook on the output layer keeps the
scored positions only, and the loss is the mean cross-entropy over them that transformers'
ForCausalLMLoss takes (targets are the labels shifted by one, -100 ignored, logits upcast to
fp32), so only the order of the sums differs. What a model does after its output layer
(Gemma's logit soft-capping) still applies to the kept logits.

A model whose loss adds more than the tokens' cross-entropy (an MoE router's auxiliary
loss), that has no output layer to hook, or whose forward does not pass the labels'
positions through it once (the first batch shows it), keeps `model(**batch).loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def scored_loss(model: Any, head_of: Any | None = None) -> Callable[[dict], torch.Tensor]:
    """loss(batch) for `model` (what the loop calls, possibly wrapped for several processes);
    `head_of`: the unwrapped model whose output layer is hooked (default: `model`)."""
    owner = head_of if head_of is not None else model
    getter = getattr(owner, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    config = getattr(owner, "config", None)
    if head is None or getattr(config, "output_router_logits", False):
        return lambda batch: model(**batch).loss

    plain = [False]  # set once the hook is seen not to apply: then model(**batch).loss

    def loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if plain[0]:
            return model(**batch).loss
        targets = batch["labels"][:, 1:]
        scored = targets != IGNORE_INDEX
        cut = []

        def keep_scored(module, args):
            hidden = args[0]
            if hidden.dim() != 3 or hidden.shape[1] != targets.shape[1] + 1:
                return None  # not the positions of the labels (virtual tokens and the like)
            cut.append(True)
            return (hidden[:, :-1][scored].unsqueeze(0), *args[1:])

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        handle = head.register_forward_pre_hook(keep_scored)
        try:
            logits = model(**inputs).logits
        finally:
            handle.remove()
        if len(cut) != 1 or logits.shape[:2] != (1, int(scored.sum())):
            plain[0] = True  # the head was bypassed or called otherwise: the model's own loss
            return model(**batch).loss
        return F.cross_entropy(logits[0].float(), targets[scored])

    return loss
