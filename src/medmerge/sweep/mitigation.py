"""A decoding-time mitigation: lower the scores of think and reasoning-marker tokens by gamma.

As the study's follow-up did inside vLLM: every generation step, the logits of `<think>`,
`</think>` (and, optionally, reasoning markers that are one token, such as "Therefore" or
"首先") are reduced by gamma before sampling. This module chooses the tokens; each backend
applies the shift its own way (`Backend.token_penalty`: a forward hook on the output layer
in transformers, a logit bias in vLLM).
"""

from __future__ import annotations

from typing import Any

from medmerge.eval.answer_only import THINK_TAGS, spellings
from medmerge.eval.leakage import DEFAULT_MARKERS


def penalized_token_ids(tokenizer: Any, markers: bool = True) -> list[int]:
    """Ids of the think tags, plus every marker spelling that is a single token."""
    ids = set()
    for tag in THINK_TAGS:
        encoded = tokenizer(tag, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(encoded[0])
    if markers:
        for marker in DEFAULT_MARKERS:
            for spelling in spellings(marker.rstrip(","), ("", " ")):
                encoded = tokenizer(spelling, add_special_tokens=False)["input_ids"]
                if len(encoded) == 1:
                    ids.add(encoded[0])
    return sorted(ids)
