"""Per-module LoRA scaling, resolved exactly as PEFT resolves it.

s = alpha / r (alpha / sqrt(r) for rsLoRA), with alpha taken from alpha_pattern where a
pattern matches the module, else lora_alpha.
"""

from __future__ import annotations

import math
import re
from typing import Any


def module_regex(pattern: str) -> str:
    """How PEFT matches an alpha_pattern / rank_pattern key against a module name."""
    return rf"(.*\.)?({pattern})$"


def module_scale(config: dict[str, Any], module: str, rank: int) -> float:
    """s = alpha / r, or alpha / sqrt(r) for rsLoRA, with alpha from alpha_pattern as PEFT reads it."""
    alpha = config.get("lora_alpha", 8)
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(module_regex(pattern), module):
            alpha = value
            break
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
