"""A decoding-time mitigation: lower the scores of think and reasoning-marker tokens by gamma.

As the study's follow-up did inside vLLM: every generation step, the logits of `<think>`,
`</think>` (and, optionally, reasoning markers that are one token, such as "Therefore" or
"首先") are reduced by gamma before sampling. `ThinkPenalty` is a transformers
LogitsProcessor; `think_penalty` applies the same shift through a forward hook on the
output layer, so the existing evaluation backend uses it without a change; the vLLM
backend takes it as a logit bias of -gamma on those tokens (`backend_think_penalty`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from medmerge.eval.leakage import DEFAULT_MARKERS

THINK_TOKENS = ("<think>", "</think>")


def penalized_token_ids(tokenizer: Any, markers: bool = True) -> list[int]:
    """Ids of the think tags, plus every marker spelling that is a single token."""
    ids = set()
    for tag in THINK_TOKENS:
        encoded = tokenizer(tag, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    if markers:
        for marker in DEFAULT_MARKERS:
            word = marker.rstrip(",")
            for spelling in {word, word.capitalize(), " " + word, " " + word.capitalize()}:
                encoded = tokenizer(spelling, add_special_tokens=False)["input_ids"]
                if len(encoded) == 1:
                    ids.add(encoded[0])
    return sorted(ids)


class ThinkPenalty:
    """LogitsProcessor: scores[:, ids] -= gamma (pass in `logits_processor=[...]`)."""

    def __init__(self, token_ids: Sequence[int], gamma: float) -> None:
        self.token_ids = torch.tensor(list(token_ids), dtype=torch.long)
        self.gamma = float(gamma)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.gamma == 0 or self.token_ids.numel() == 0:
            return scores
        scores = scores.clone()
        scores[:, self.token_ids.to(scores.device)] -= self.gamma
        return scores


@contextlib.contextmanager
def think_penalty(model: torch.nn.Module, token_ids: Sequence[int], gamma: float) -> Iterator[None]:
    """While inside, the model's output logits of `token_ids` are lowered by gamma.

    Equivalent to ThinkPenalty placed first among the logits processors (temperature and
    top-p then act on the shifted scores); use it around generation only, not scoring.
    """
    if gamma == 0 or not token_ids:
        yield
        return
    processor = ThinkPenalty(token_ids, gamma)

    def shift(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        flat = output.reshape(-1, output.shape[-1])
        return processor(None, flat).reshape(output.shape)

    handle = model.get_output_embeddings().register_forward_hook(shift)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def backend_think_penalty(backend: Any, token_ids: Sequence[int], gamma: float) -> Iterator[None]:
    """`think_penalty` on either backend: vLLM's as a logit bias, transformers' as a hook.

    vLLM adds a logit bias before temperature and top-p, as the hook's shift comes first.
    """
    if not hasattr(backend, "logit_bias"):
        with think_penalty(backend.model, token_ids, gamma):
            yield
        return
    backend.logit_bias = {int(i): -float(gamma) for i in token_ids} if gamma else {}
    try:
        yield
    finally:
        backend.logit_bias = {}
