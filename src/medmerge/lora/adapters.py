"""Read a PEFT LoRA adapter folder into per-base-tensor factors with their exact scale.

A PEFT key such as `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` maps to
the base tensor `model.layers.0.self_attn.q_proj.weight`; its delta is s * B @ A with
s = alpha / r (alpha / sqrt(r) for rsLoRA), r and alpha taken per module from
rank_pattern / alpha_pattern exactly as PEFT resolves them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medmerge.checkpoints import TensorEntry, read_header, read_tensor, refuse_dangling_link
from medmerge.errors import MergeError, ModelError
from medmerge.lora.scaling import module_regex, module_scale
from medmerge.manifest import read_json_object, read_manifest, sha256_file

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
_PREFIX = "base_model.model."
# Config switches that change the delta away from s * B @ A; merged exactly only when off.
_VARIANT_FLAGS = ("use_dora", "use_qalora", "use_bdlora", "alora_invocation_tokens")
_VARIANT_CONFIGS = (
    "arrow_config",
    "layer_replication",
    "target_parameters",
    "trainable_token_indices",
)
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
_FACTOR_SUFFIXES = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_B.bias": "bias",
    ".lora_embedding_A": "embedding_A",
    ".lora_embedding_B": "embedding_B",
}


class StoredTensor:
    """A tensor left in its safetensors file: its shape is known, its bytes are read on demand."""

    __slots__ = ("entry",)

    def __init__(self, entry: TensorEntry):
        self.entry = entry

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.entry.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.entry.torch_dtype

    def load(self) -> torch.Tensor:
        return read_tensor(self.entry)


Stored = torch.Tensor | StoredTensor


def _loaded(value: Stored | None) -> torch.Tensor | None:
    return value.load() if isinstance(value, StoredTensor) else value


class LoraFactors:
    """One module's LoRA factors; its weight delta is `scale * B @ A` (transposed if `transpose`).

    A, B and the bias may stay in the adapter file (StoredTensor): each is then read when it
    is asked for and not kept, so a merge holds the factors of the module it is merging, not
    the whole adapter (at 1.8 B, two adapters of r 16 + 64 are 350 MB in fp32).
    """

    def __init__(
        self,
        module: str,
        A: Stored,
        B: Stored,
        scale: float,
        transpose: bool = False,  # fan_in_fan_out layouts and embeddings store W as (in, out)
        bias: Stored | None = None,  # lora_bias: the module's bias moves by scale * bias
        embedding: bool = False,  # saved as lora_embedding_A/B
    ):
        self.module, self.scale = module, scale
        self.transpose, self.embedding = transpose, embedding
        self._A, self._B, self._bias = A, B, bias

    @property
    def A(self) -> torch.Tensor:
        return _loaded(self._A)

    @property
    def B(self) -> torch.Tensor:
        return _loaded(self._B)

    @property
    def bias(self) -> torch.Tensor | None:
        return _loaded(self._bias)

    @property
    def has_bias(self) -> bool:
        return self._bias is not None

    @property
    def rank(self) -> int:
        return self._A.shape[0]

    @property
    def out_features(self) -> int:
        """Rows of B @ A (the module's output size; the embedding width for an embedding)."""
        return self._B.shape[0]

    @property
    def in_features(self) -> int:
        """Columns of B @ A (the module's input size; the vocabulary for an embedding)."""
        return self._A.shape[1]

    def loaded(self) -> LoraFactors:
        """These factors with A, B and the bias read into memory: a thread that reads the next
        module's factors ahead does file reads only, and leaves the arithmetic on them (which
        torch spreads over every core) to the thread that computes."""
        return LoraFactors(
            self.module, self.A, self.B, self.scale, self.transpose, self.bias, self.embedding
        )

    def weight_delta(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The dense delta of this module's weight, computed in `dtype`."""
        delta = self.B.to(dtype) @ self.A.to(dtype)
        delta = delta.T if self.transpose else delta
        return delta * self.scale

    def __repr__(self) -> str:
        return (
            f"LoraFactors({self.module!r}, rank={self.rank}, scale={self.scale}, "
            f"transpose={self.transpose}, embedding={self.embedding}, bias={self.has_bias})"
        )


@dataclass
class Adapter:
    """A PEFT LoRA adapter, keyed by the base tensor each part changes."""

    path: Path
    config: dict[str, Any]
    factors: dict[str, LoraFactors] = field(default_factory=dict)  # base weight name -> factors
    full_copies: dict[str, torch.Tensor] = field(default_factory=dict)  # modules_to_save
    base_copies: dict[str, torch.Tensor] = field(default_factory=dict)  # saved base_layer weights
    manifest: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.path.name

    def touched(self) -> set[str]:
        """Every base tensor name this adapter changes."""
        names = set(self.factors) | set(self.full_copies)
        names |= {_bias_name(f.module) for f in self.factors.values() if f.has_bias}
        return names

    def hashes(self) -> dict[str, str]:
        weights = self.path / ADAPTER_WEIGHTS
        if not weights.is_file():
            weights = self.path / ADAPTER_PICKLE
        return {
            "adapter_config_sha256": sha256_file(self.path / ADAPTER_CONFIG),
            "adapter_weights_sha256": sha256_file(weights),
        }


def _all_finite(tensor: torch.Tensor) -> bool:
    if tensor.numel() == 0 or not tensor.is_floating_point():
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low) and torch.isfinite(high))


def _refuse_dtype(folder: Path, key: str, tensor: Stored) -> None:
    """Tensors must be fp32, bf16, fp16 or fp64: integer factors would merge as their raw
    values (x1000 for int32 that held weights x1000), and PEFT neither writes nor runs fp8 ones."""
    if tensor.dtype.is_floating_point and tensor.dtype not in _FP8:
        return
    dtype = str(tensor.dtype).removeprefix("torch.")
    fix = (
        "upcast the factors (exactly: every fp8 value is an fp32 value) and re-save the adapter"
        if tensor.dtype in _FP8
        else "integers are not weights; re-export the adapter in floating point"
    )
    raise MergeError(
        f"{folder}: tensor {key!r} is stored as {dtype}; adapter tensors must be fp32, bf16 "
        f"or fp16: {fix}"
    )


def _refuse_not_finite(
    folder: Path, key: str, tensor: Stored, buffer: torch.Tensor
) -> torch.Tensor:
    """Refuse NaN/Inf up front, before a merge writes anything. A tensor left in the file is
    read into `buffer` (grown as needed, returned) and not kept."""
    if isinstance(tensor, StoredTensor):
        if buffer.numel() < tensor.entry.nbytes:
            buffer = torch.empty(tensor.entry.nbytes, dtype=torch.uint8)
        values = read_tensor(tensor.entry, buffer)
    else:
        values = tensor
    if not _all_finite(values):
        raise MergeError(
            f"{folder}: tensor {key!r} holds NaN or Inf; the adapter is broken, retrain or re-export it"
        )
    return buffer


def _bias_name(module: str) -> str:
    return f"{module}.bias"


def load_adapter(path: str | Path, allow_pickle: bool = False) -> Adapter:
    """Read an adapter folder; refuse variants whose delta is not s * B @ A."""
    folder = Path(path)
    config = _read_config(folder)
    _refuse_variants(folder, config)
    state = _read_state(folder, allow_pickle)
    adapter = Adapter(path=folder, config=config, manifest=read_manifest(folder))
    grouped: dict[str, dict[str, Stored]] = {}
    check_buffer = torch.empty(0, dtype=torch.uint8)
    for key, tensor in state.items():
        _refuse_dtype(folder, key, tensor)
        check_buffer = _refuse_not_finite(folder, key, tensor, check_buffer)
        _sort_key(folder, key, tensor, adapter, grouped)
    for module, parts in grouped.items():
        adapter.factors[f"{module}.weight"] = _factors(folder, module, parts, config)
    return adapter


def _read_config(folder: Path) -> dict[str, Any]:
    file = folder / ADAPTER_CONFIG
    refuse_dangling_link(file)
    if not file.is_file():
        raise ModelError(
            f"{folder}: not a PEFT adapter folder (no {ADAPTER_CONFIG}); pass an adapter directory"
        )
    config = read_json_object(file, "re-save the adapter with PEFT's save_pretrained")
    problems = _config_type_problems(config)
    if problems:
        raise ModelError(
            f"{file}: {'; '.join(problems)}; fix the values (PEFT writes numbers as numbers)"
        )
    return config


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _config_type_problems(config: dict[str, Any]) -> list[str]:
    """Every field the merge or PEFT reads whose type is wrong (a hand-edited or foreign config)."""
    problems = []
    if "r" in config and not _is_rank(config["r"]):
        problems.append(f"r must be a positive integer, got {config['r']!r}")
    if "lora_alpha" in config and not _is_number(config["lora_alpha"]):
        problems.append(f"lora_alpha must be a number, got {config['lora_alpha']!r}")
    for key, valid, kind in (
        ("alpha_pattern", _is_number, "a number"),
        ("rank_pattern", _is_rank, "a positive integer"),
    ):
        problems += _pattern_problems(key, config.get(key), valid, kind)
    targets = config.get("target_modules")
    if isinstance(targets, str):
        problems += _regex_problems("target_modules", [targets], lambda p: p)
    elif targets is not None and not _is_string_list(targets):
        problems.append(f"target_modules must be a list of names or a regex, got {targets!r}")
    saved = config.get("modules_to_save")
    if saved is not None and not _is_string_list(saved):
        problems.append(f"modules_to_save must be a list of names, got {saved!r}")
    for key in ("use_rslora", "fan_in_fan_out"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            problems.append(f"{key} must be true or false, got {config[key]!r}")
    if not isinstance(config.get("peft_type", "LORA"), str):
        problems.append(f"peft_type must be a string, got {config['peft_type']!r}")
    return problems


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _pattern_problems(key: str, patterns: Any, valid, kind: str) -> list[str]:
    """alpha_pattern / rank_pattern: a mapping of module regexes to values."""
    if patterns is None:
        return []
    if not isinstance(patterns, dict):
        return [f"{key} must map module patterns to values, got {patterns!r}"]
    problems = [
        f"{key}[{pattern!r}] must be {kind}, got {value!r}"
        for pattern, value in patterns.items()
        if not valid(value)
    ]
    return problems + _regex_problems(key, list(patterns), module_regex)


def _regex_problems(key: str, patterns: list[str], wrap) -> list[str]:
    problems = []
    for pattern in patterns:
        try:
            re.compile(wrap(pattern))
        except re.error as exc:
            problems.append(f"{key} pattern {pattern!r} is not a valid regex ({exc})")
    return problems


def _refuse_variants(folder: Path, config: dict[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise MergeError(
            f"{folder}: peft_type {config.get('peft_type')!r} is not LoRA; only LoRA adapters merge"
        )
    for flag in (*_VARIANT_FLAGS, *_VARIANT_CONFIGS):
        if config.get(flag):
            raise MergeError(
                f"{folder}: adapter uses {flag} whose delta is not s*B@A; medmerge refuses it rather than "
                "merge it inexactly (merge it with PEFT's merge_and_unload, or retrain without it)"
            )


def _read_state(folder: Path, allow_pickle: bool) -> dict[str, Stored]:
    """The adapter's tensors by key: a safetensors file's left in the file (its header is
    read and checked against the file here), a pickle's loaded."""
    weights = folder / ADAPTER_WEIGHTS
    refuse_dangling_link(weights)
    if weights.is_file():
        return {entry.name: StoredTensor(entry) for entry in read_header(weights)}
    pickled = folder / ADAPTER_PICKLE
    refuse_dangling_link(pickled)
    if pickled.is_file():
        if not allow_pickle:
            raise ModelError(
                f"{pickled}: pickle checkpoints can run code when loaded; convert to safetensors or pass --allow-pickle"
            )
        try:
            return torch.load(pickled, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refuses anything but tensors and containers
            raise ModelError(
                f"{pickled}: cannot load as plain tensors ({exc}); re-save it as safetensors"
            ) from None
    raise ModelError(f"{folder}: no {ADAPTER_WEIGHTS} found next to {ADAPTER_CONFIG}")


def _sort_key(folder: Path, key: str, tensor: Stored, adapter: Adapter, grouped: dict) -> None:
    """File one saved tensor under its module's factors, a full copy, or a base copy
    (the copies are loaded: every consumer compares or subtracts them whole)."""
    name = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
    for suffix, part in _FACTOR_SUFFIXES.items():
        if name.endswith(suffix):
            module = name[: -len(suffix)]
            grouped.setdefault(module, {})[part] = tensor
            return
    if name.endswith(".base_layer.bias"):
        # bias="all" / "lora_only": the trained bias of a LoRA-wrapped module, a full copy
        # like the trained biases of the modules it does not wrap (`q_proj.bias`).
        adapter.full_copies[name.replace(".base_layer.", ".")] = _loaded(tensor)
    elif ".base_layer." in name:
        adapter.base_copies[name.replace(".base_layer.", ".")] = _loaded(tensor)
    elif "lora_" in name or "magnitude" in name:
        raise MergeError(
            f"{folder}: tensor {key!r} is not a plain LoRA factor (a LoRA variant?); medmerge merges plain LoRA only"
        )
    else:
        adapter.full_copies[name.replace(".modules_to_save.default.", ".")] = _loaded(tensor)


def _factors(folder: Path, module: str, parts: dict[str, Stored], config: dict) -> LoraFactors:
    embedding = "embedding_A" in parts
    A = parts.get("embedding_A" if embedding else "A")
    B = parts.get("embedding_B" if embedding else "B")
    if A is None or B is None:
        raise MergeError(
            f"{folder}: module {module!r} lacks lora_A or lora_B; the adapter file is incomplete"
        )
    if len(A.shape) != 2 or len(B.shape) != 2 or A.shape[0] != B.shape[1]:
        raise MergeError(
            f"{folder}: module {module!r} has lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)}, "
            "which do not multiply (a convolution or a corrupt file); medmerge merges linear and embedding LoRA"
        )
    return LoraFactors(
        module=module,
        A=A,
        B=B,
        scale=module_scale(config, module, A.shape[0]),
        # PEFT embeddings keep A as (r, vocab), so B @ A is the transpose of the table.
        transpose=embedding or bool(config.get("fan_in_fan_out")),
        bias=parts.get("bias"),
        embedding=embedding,
    )
