"""Does a merge fit its base? Right base, every adapter tensor lands on a base tensor of its
shape, Conv1D layouts agree, every layer range and group weight selects something.

`check_fits` is the one check every entry point runs (merge's preflight, the in-memory merge
of eval/sweep/diagnose, verify), so a mismatched adapter is refused with the same line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medmerge.architectures import GENERIC, Architecture, architecture_of
from medmerge.checkpoints import Checkpoint
from medmerge.errors import MergeError, ModelError
from medmerge.loading import CONFIG_NAME, read_model_config
from medmerge.lora.adapters import Adapter, LoraFactors
from medmerge.lora.delta import all_touched
from medmerge.lora.plan import WeightPlan
from medmerge.manifest import model_identity
from medmerge.provenance import check_identity, has_recorded_base


def check_shapes(
    adapters: Sequence[Adapter], base: Checkpoint, plan: WeightPlan | None = None
) -> None:
    """The base's config.json must describe its tensors, and the adapters (and `plan`) must
    fit the base's tensors (`check_fits`)."""
    check_base_config(base)
    check_fits(adapters, base.shapes(), plan, base.config)


def check_in_memory_merge(
    adapters: Sequence[Adapter],
    model: torch.nn.Module,
    base: str | Path,
    identity: dict[str, str] | None = None,
) -> None:
    """What `medmerge merge` checks before writing, for a merge applied to a loaded base model:
    the adapters fit its parameters (`check_fits`), and no adapter recorded another base.

    `identity` is the base's model_identity when the caller has it (it is hashed otherwise).
    """
    config = model.config.to_dict() if hasattr(model, "config") else None
    check_fits(adapters, {name: p.shape for name, p in model.named_parameters()}, None, config)
    if any(has_recorded_base(a) for a in adapters):
        check_identity(adapters, identity or model_identity(base))


def check_fits(
    adapters: Sequence[Adapter],
    shapes: Mapping[str, Sequence[int]],
    plan: WeightPlan | None = None,
    config: Mapping[str, Any] | None = None,
) -> None:
    """Place every adapter on the base (`place_adapters`: key prefixes, per-module layout),
    then check that each adapter tensor lands on a tensor of `shapes` of its shape, that no
    LoRA changes a tied embedding, and that every layer range or group weight of `plan`
    selects a tensor the merge changes. A MergeError (one line, exit 2) otherwise.

    The architecture is the plan's, else the one `config` (config.json) names."""
    if plan is not None:
        architecture = plan.architecture
    else:
        architecture = architecture_of(config) if config is not None else GENERIC
    for adapter in adapters:
        place_adapter(adapter, shapes, architecture)
        if config is not None and architecture.ties_embeddings(config):
            _refuse_tied_embedding_lora(adapter, shapes)
        for name, shape in _adapter_shapes(adapter):
            found = shapes.get(name)
            if found is None:
                raise MergeError(
                    f"{adapter.path}: adapter changes {name!r} but the base has no such tensor; "
                    "the adapter was made for another model architecture, pass its base"
                )
            if tuple(found) != tuple(shape):
                raise MergeError(
                    f"{adapter.path}: delta for {name!r} has shape {tuple(shape)} but the base tensor is "
                    f"{tuple(found)}; the adapter was made for another base model, pass that one"
                )
    problems = plan.unmatched(all_touched(adapters)) if plan is not None else []
    if problems:
        raise MergeError("; ".join(problems) + "; fix the merge config")


def place_adapter(
    adapter: Adapter, shapes: Mapping[str, Sequence[int]], architecture: Architecture
) -> None:
    """Name every tensor the adapter changes as the base does, and lay out each module's
    delta as the base stores it.

    Names: a GPT-2 adapter says `transformer.h.0...` where a hub checkpoint says `h.0...`
    (and the other way round); the prefix is mapped when only the mapped name exists.
    Layout: decided per module, as PEFT decides it when it wraps the module, never from
    the one saved `fan_in_fan_out` flag (PEFT rewrites that flag per module and saves the
    last one): Conv1D modules store W as (in, out), Linear as (out, in). For an unknown
    architecture the base's shape decides; only a square tensor keeps the saved flag.
    """
    for table in (adapter.factors, adapter.full_copies, adapter.base_copies):
        for name in [n for n in table if n not in shapes]:
            mapped = _mapped_name(name, shapes, architecture)
            if mapped is not None:
                table[mapped] = table.pop(name)
                if table is adapter.factors:
                    table[mapped].module = mapped[: -len(".weight")]
    for name, factors in adapter.factors.items():
        if not factors.embedding:
            factors.transpose = _stored_transposed(name, factors, shapes, architecture)


def _mapped_name(
    name: str, shapes: Mapping[str, Sequence[int]], architecture: Architecture
) -> str | None:
    for prefix in architecture.prefixes:
        if prefix and name.startswith(prefix) and name[len(prefix) :] in shapes:
            return name[len(prefix) :]
        if prefix and prefix + name in shapes:
            return prefix + name
    return None


def _stored_transposed(
    name: str, factors: LoraFactors, shapes: Mapping[str, Sequence[int]], architecture
) -> bool:
    if architecture.is_conv1d(name):
        return True
    if architecture is not GENERIC:
        return False
    shape = tuple(shapes.get(name, ()))
    out_features, in_features = factors.out_features, factors.in_features
    if out_features != in_features and shape == (in_features, out_features):
        return True
    if out_features != in_features and shape == (out_features, in_features):
        return False
    return factors.transpose


def _refuse_tied_embedding_lora(adapter: Adapter, shapes: Mapping[str, Sequence[int]]) -> None:
    """A LoRA on the input embedding or the LM head of a model that ties them: merged into
    the one shared tensor it would change both, unlike the adapted model PEFT ran (there the
    LoRA changes only the module it wraps). A checkpoint that stores the LM head apart
    keeps it apart (transformers loads the stored one), so that case merges."""
    if any(n.endswith("lm_head.weight") for n in shapes):
        return
    for name, factors in adapter.factors.items():
        head = name.endswith("lm_head.weight")
        if factors.embedding or _EMBEDDING.search(name) or head:
            other = "input embedding" if head else "LM head"
            raise MergeError(
                f"{adapter.path}: a LoRA on {name!r}, which this model ties to its {other}; "
                f"merged into the shared tensor it would change the {other} too, unlike the "
                "model PEFT trained (untie the embeddings, tie_word_embeddings: false, and "
                "retrain, or serve this adapter unmerged)"
            )


def _adapter_shapes(adapter: Adapter):
    for name, factors in adapter.factors.items():
        out_features, in_features = factors.out_features, factors.in_features
        yield (
            name,
            (in_features, out_features) if factors.transpose else (out_features, in_features),
        )
        if factors.has_bias:
            yield name[: -len(".weight")] + ".bias", tuple(factors.bias.shape)
    for name, tensor in {**adapter.full_copies, **adapter.base_copies}.items():
        yield name, tuple(tensor.shape)


# Config keys as architectures spell them; a check is skipped when the config has none.
_CONFIG_KEYS = {
    "vocab_size": ("vocab_size", "padded_vocab_size", "embedding_size"),
    "hidden_size": ("hidden_size", "n_embd", "d_model", "word_embed_proj_dim", "embedding_size"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
}
_EMBEDDING = re.compile(
    r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in|tok_embeddings)\.weight$"
)
_DECODER_LAYER = r"(layers|h|blocks)\.(\d+)\."


def check_base_config(base: Checkpoint) -> None:
    """config.json's vocab, hidden, layer and MLP sizes must match the tensors they describe.

    transformers would reshape or randomly initialise what disagrees; the merge would say
    "[verified]" and verify or eval crash later. Names are generic: the decoder layers are
    the `layers.N.` / `h.N.` / `blocks.N.` under the input embedding's prefix (Llama, Qwen,
    Gemma, Phi, GPT-2, MoE), so a vision tower's layers are not counted.
    """
    config = read_model_config(base.folder)
    sizes = _config_sizes(config)
    embedding = min((n for n in base.entries if _EMBEDDING.search(n)), key=len, default=None)
    if embedding is None:
        return
    file = base.folder / CONFIG_NAME
    shape = base.entries[embedding].shape
    if len(shape) == 2:
        _expect(file, "vocab_size", sizes, shape[0], f"{embedding} has shape {shape}")
        _expect(file, "hidden_size", sizes, shape[1], f"{embedding} has shape {shape}")
    head = base.entries.get("lm_head.weight")
    if head is not None and len(head.shape) == 2:
        _expect(file, "vocab_size", sizes, head.shape[0], f"lm_head.weight has shape {head.shape}")
    prefix = embedding[: embedding.rindex(embedding.split(".")[-2])]
    _check_layers(file, config, sizes, base, prefix)


def _check_layers(
    file: Path,
    config: dict[str, Any],
    sizes: dict[str, tuple[int, ...]],
    base: Checkpoint,
    prefix: str,
) -> None:
    layer = re.compile(rf"^{re.escape(prefix)}{_DECODER_LAYER}")
    found = {(m.group(1), int(m.group(2))) for n in base.entries if (m := layer.match(n))}
    indices = {index for _, index in found}
    if indices and sizes.get("num_hidden_layers"):
        extra = _int(_text_config(config).get("num_nextn_predict_layers")) or 0  # MTP layers
        want = sizes["num_hidden_layers"][0]
        if not want <= max(indices) + 1 <= want + extra:
            raise ModelError(
                f"{file}: num_hidden_layers is {want} but the weights hold layers 0..{max(indices)} "
                f"({prefix}{min(found)[0]}.N.); config.json does not describe these weights: restore the "
                "model's own config.json"
            )
    intermediate = _int(_text_config(config).get("intermediate_size"))
    mlp = re.compile(rf"^{re.escape(prefix)}{_DECODER_LAYER}mlp\.down_proj\.weight$")
    for name, entry in base.entries.items():
        if mlp.match(name) and len(entry.shape) == 2:
            _expect(file, "hidden_size", sizes, entry.shape[0], f"{name} has shape {entry.shape}")
            if intermediate is not None and entry.shape[1] != intermediate:
                raise ModelError(
                    f"{file}: intermediate_size is {intermediate} but {name} has shape {entry.shape}; "
                    "config.json does not describe these weights: restore the model's own config.json"
                )


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    """A multimodal config's language-model part (text_config), else the config itself."""
    text = config.get("text_config")
    return {**config, **text} if isinstance(text, dict) else config


def _config_sizes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each checked size -> the values config.json allows for it (aliases and paddings)."""
    values = _text_config(config)
    sizes = {}
    for size, keys in _CONFIG_KEYS.items():
        allowed = tuple(v for v in (_int(values.get(k)) for k in keys) if v is not None)
        if allowed:
            sizes[size] = allowed
    return sizes


def _expect(file: Path, size: str, sizes: dict[str, tuple[int, ...]], got: int, where: str) -> None:
    allowed = sizes.get(size)
    if allowed and got not in allowed:
        raise ModelError(
            f"{file}: {size} is {allowed[0]} but {where}; config.json does not describe these "
            "weights: restore the model's own config.json"
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
