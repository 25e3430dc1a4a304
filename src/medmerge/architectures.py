"""What medmerge knows about each model architecture, as data keyed by config.json's `model_type`.

Per architecture: where the decoder layers sit in a checkpoint key (their container and the
key prefixes checkpoints are saved with, e.g. GPT-2 with and without `transformer.`), which
sub-modules of a layer form the attention and MLP groups, which modules are Conv1D (weights
stored transposed, as (in, out)), and whether the input embedding and the LM head are tied
unless config.json says otherwise. Adding an architecture is one `Architecture` entry in
`ARCHITECTURES` below (and its case in tests/test_architectures.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

GROUPS = ("attention", "mlp")


@dataclass(frozen=True)
class Architecture:
    """The checkpoint layout of one model family.

    `layers` is the regex of the decoder-layer container (`layers`, `h`); `prefixes` the key
    prefixes seen before it (`model.`, `transformer.`, or none); `groups` the names of each
    group's sub-modules directly under a layer (`self_attn`, `mlp`).
    """

    name: str
    layers: str = "layers"
    prefixes: tuple[str, ...] = ("model.", "")
    groups: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"attention": ("self_attn",), "mlp": ("mlp",)}
    )
    conv1d: tuple[str, ...] = ()
    tied_embeddings: bool = False
    any_prefix: bool = False  # the generic fallback: layers under whatever prefix

    @cached_property
    def _layer(self) -> re.Pattern[str]:
        prefixes = r".*\." if self.any_prefix else "|".join(re.escape(p) for p in self.prefixes)
        optional = "?" if self.any_prefix else ""
        return re.compile(rf"^(?:{prefixes}){optional}(?:{self.layers})\.(\d+)\.(.+)$")

    def split(self, name: str) -> tuple[int, str] | None:
        """(layer index, the rest of the key) for a tensor inside a decoder layer, else None."""
        match = self._layer.match(name)
        return (int(match.group(1)), match.group(2)) if match else None

    def layer_of(self, name: str) -> int | None:
        """The decoder-layer index of tensor `name`, or None outside the layers."""
        found = self.split(name)
        return found[0] if found else None

    def group_of(self, name: str) -> str | None:
        """ "attention", "mlp" or None: the group whose sub-module holds tensor `name`."""
        found = self.split(name)
        if found is None:
            return None
        first = found[1].split(".", 1)[0]
        return next((g for g, modules in self.groups.items() if first in modules), None)

    def is_conv1d(self, name: str) -> bool:
        """True when tensor `name` belongs to a Conv1D module (its weight is stored (in, out))."""
        parts = name.split(".")
        return len(parts) >= 2 and parts[-2] in self.conv1d

    def ties_embeddings(self, config: Mapping[str, Any]) -> bool:
        """Whether the LM head shares the input embedding's tensor in this model."""
        text = config.get("text_config")
        values = {**config, **text} if isinstance(text, dict) else config
        tied = values.get("tie_word_embeddings")
        return self.tied_embeddings if tied is None else bool(tied)


def _llama_like(name: str, tied: bool = False, **fields: Any) -> Architecture:
    return Architecture(name, tied_embeddings=tied, **fields)


_MOE_MLP = {"attention": ("self_attn",), "mlp": ("mlp", "block_sparse_moe")}

ARCHITECTURES: dict[str, Architecture] = {
    arch.name: arch
    for arch in (
        _llama_like("llama"),
        _llama_like("mistral"),
        _llama_like("qwen2"),
        _llama_like("qwen3"),
        _llama_like("phi3"),  # fused self_attn.qkv_proj and mlp.gate_up_proj
        _llama_like("gemma2", tied=True),
        _llama_like("gemma3_text", tied=True),
        _llama_like("qwen2_moe", groups=_MOE_MLP),  # experts and shared_expert under mlp
        _llama_like("qwen3_moe", groups=_MOE_MLP),
        _llama_like("mixtral", groups=_MOE_MLP),  # older checkpoints: block_sparse_moe
        Architecture(
            "gpt2",
            layers="h",
            prefixes=("transformer.", ""),
            groups={"attention": ("attn",), "mlp": ("mlp",)},
            conv1d=("c_attn", "c_proj", "c_fc", "q_attn"),
            tied_embeddings=True,
        ),
    )
}

# Unknown model types: any prefix, the common layer containers and sub-module names.
GENERIC = Architecture(
    "generic",
    layers="layers|h|blocks|layer",
    any_prefix=True,
    groups={
        "attention": ("self_attn", "attn", "attention"),
        "mlp": ("mlp", "feed_forward", "block_sparse_moe", "ffn"),
    },
)


def architecture_of(config: Mapping[str, Any]) -> Architecture:
    """The architecture of a model from its config.json (a multimodal model's text part), or
    the generic fallback for a model_type medmerge has no entry for."""
    text = config.get("text_config")
    for source in (config, text if isinstance(text, dict) else {}):
        found = ARCHITECTURES.get(str(source.get("model_type")))
        if found is not None:
            return found
    return GENERIC
