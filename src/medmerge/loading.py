"""Every model and tokenizer load goes through here, so that none runs on weights it did not read.

Rules: a name that is not a local folder is never looked up on a model hub unless
`allow_hub` is set; weights load from safetensors unless `allow_pickle`; a config that
needs its own Python code (auto_map) is refused unless `trust_remote_code`; transformers'
loading report (missing, unexpected or reshaped tensors: parameters left randomly
initialised) is an error, not a log line the CLI silences; every floating tensor is finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from medmerge.errors import ModelError
from medmerge.manifest import read_json_object

CONFIG_NAME = "config.json"
_PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth")
_OTHER_FRAMEWORKS = ("tf_model.h5", "flax_model.msgpack", "model.ckpt.index")
# A tokenizer needs a vocabulary; without one AutoTokenizer builds a 1-token tokenizer.
_VOCAB_PATTERNS = (
    "tokenizer.json",
    "tokenizer.model",
    "*.tiktoken",
    "vocab.*",
    "spiece.model",
    "*sentencepiece*.model",
    "*.spm",
)
_HUB_PATTERNS = ("*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt")
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError)
_NAMED = 3  # tensors named in a one-line message; the rest are counted


def resolve_model_folder(
    path: str | Path, *, allow_hub: bool = False, allow_pickle: bool = False
) -> Path:
    """The local folder `path` names; a hub id is downloaded to the local cache only if allowed.

    transformers looks a missing local path up on the hub even with local_files_only (it asks
    for adapter_config.json), so a path that does not exist is refused before it is called.
    """
    folder = Path(path)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ModelError(
            f"{path}: is a file, not a model folder; pass the folder that holds {CONFIG_NAME}"
        )
    if not allow_hub:
        raise ModelError(
            f"{path}: no such model folder; pass an existing local folder (medmerge never looks "
            "a name up on a model hub unless allow_hub is set)"
        )
    from huggingface_hub import snapshot_download

    patterns = [*_HUB_PATTERNS, *(("*.bin",) if allow_pickle else ())]
    try:
        return Path(snapshot_download(str(path), allow_patterns=patterns))
    except Exception as exc:  # hub errors are many types; any of them means "not found"
        raise ModelError(
            f"{path}: not found on the model hub ({_first_line(exc)}); check the name"
        ) from None


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict; a missing, BOM-prefixed or malformed file is one line."""
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ModelError(
            f"{folder}: not a model folder (no {CONFIG_NAME}); pass a Hugging Face model directory"
        )
    return read_json_object(file, "restore the model's config.json or re-download the model")


def check_causal_lm_config(folder: Path, config: dict[str, Any], trust_remote_code: bool) -> None:
    """Refuse remote code and configs transformers cannot load as a causal LM, before loading."""
    from transformers import __version__
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    file = folder / CONFIG_NAME
    refuse_remote_code(file, config.get("auto_map"), trust_remote_code)
    if trust_remote_code and config.get("auto_map"):
        return
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(f"{file}: no model_type; this is not a transformers model config")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelError(
            f"{file}: model_type {model_type!r} is unknown to transformers {__version__}; "
            "upgrade transformers or fix model_type"
        )
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"{file}: model_type {model_type!r} is not a causal language model (transformers has "
            "no AutoModelForCausalLM for it); medmerge trains, merges and evaluates decoder-only models"
        )


def refuse_remote_code(file: Path, auto_map: Any, trust_remote_code: bool) -> None:
    if auto_map and not trust_remote_code:
        code = sorted({str(v).split(".")[0] + ".py" for v in _flat(auto_map)})
        raise ModelError(
            f"{file}: auto_map needs the model's own Python code ({', '.join(code[:_NAMED])}), which "
            "medmerge does not run; read it and set trust_remote_code: true where the stage offers it, "
            "or use a model transformers implements"
        )


def _flat(auto_map: Any) -> list[str]:
    values = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    flat: list[str] = []
    for value in values:
        flat.extend(v for v in (value if isinstance(value, list) else [value]) if v)
    return flat


def check_weight_files(folder: Path, allow_pickle: bool) -> None:
    """Refuse a folder without safetensors weights unless pickles are allowed and present."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_PATTERNS for p in folder.glob(pattern))
    if pickles and not allow_pickle:
        raise ModelError(
            f"{folder}: only pickle weights ({pickles[0]}), which can run code when loaded; "
            "convert them to safetensors or pass --allow-pickle"
        )
    if pickles:
        return
    other = [name for name in _OTHER_FRAMEWORKS if (folder / name).exists()]
    kind = f"only {other[0]} (not PyTorch)" if other else "no weight files (*.safetensors)"
    raise ModelError(
        f"{folder}: {kind} next to {CONFIG_NAME}; pass a complete PyTorch model folder"
    )


def check_model_folder(
    folder: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False
) -> dict[str, Any]:
    """What can be checked without loading: a causal-LM config, no remote code unless trusted,
    safetensors weights unless pickles are allowed. Returns config.json."""
    config = read_model_config(folder)
    check_causal_lm_config(folder, config, trust_remote_code)
    check_weight_files(folder, allow_pickle)
    return config


def load_causal_lm(
    folder: str | Path,
    *,
    dtype: torch.dtype | str,
    allow_pickle: bool = False,
    allow_hub: bool = False,
    trust_remote_code: bool = False,
) -> Any:
    """A transformers causal LM whose every parameter was read from `folder` and is finite."""
    from transformers import AutoModelForCausalLM

    local = resolve_model_folder(folder, allow_hub=allow_hub, allow_pickle=allow_pickle)
    check_model_folder(local, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    try:
        model, report = AutoModelForCausalLM.from_pretrained(
            local,
            dtype=dtype,
            local_files_only=True,
            use_safetensors=True if not allow_pickle else None,
            trust_remote_code=trust_remote_code,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below by name instead of a bare RuntimeError
        )
    except _LOAD_ERRORS as exc:
        raise ModelError(
            f"{local}: cannot load the model ({_first_line(exc)}); pass a complete Hugging Face model folder"
        ) from None
    check_loading_report(local, report)
    check_finite(model, str(local))
    return model


def check_loading_report(folder: Path, report: dict[str, Any]) -> None:
    """Missing, unexpected or reshaped tensors mean parameters left at their random init."""
    problems = []
    missing = sorted(report.get("missing_keys") or ())
    unexpected = sorted(report.get("unexpected_keys") or ())
    mismatched = sorted(report.get("mismatched_keys") or ())
    if missing:
        problems.append(f"{len(missing)} missing from the checkpoint: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected in the checkpoint: {_names(unexpected)}")
    if mismatched:
        shapes = [
            f"{n} {tuple(got)} in the checkpoint vs {tuple(want)} in config"
            for n, got, want in mismatched[:_NAMED]
        ]
        more = f" (+{len(mismatched) - _NAMED} more)" if len(mismatched) > _NAMED else ""
        problems.append(f"{len(mismatched)} of another shape: {', '.join(shapes)}{more}")
    errors = [str(e) for e in report.get("error_msgs") or ()]
    if errors:
        problems.append(f"load errors: {_first_line(errors[0])}")
    if problems:
        raise ModelError(
            f"{folder}: the weights do not match {CONFIG_NAME} ({'; '.join(problems)}); those tensors "
            "would be randomly initialised: fix config.json or re-export the model folder"
        )


def check_finite(model: torch.nn.Module, where: str) -> None:
    """Every floating parameter finite; the first that is not is named with its count."""
    for name, param in model.named_parameters():
        if not param.is_floating_point() or param.numel() == 0:
            continue
        low, high = torch.aminmax(param.detach())
        if not (torch.isfinite(low) and torch.isfinite(high)):
            count = int((~torch.isfinite(param.detach())).sum())
            raise ModelError(
                f"{where}: tensor {name!r} holds {count} NaN/Inf values; the weights are broken, "
                "re-export or re-download them"
            )


def load_tokenizer(
    folder: str | Path, *, allow_hub: bool = False, trust_remote_code: bool = False
) -> Any:
    """The folder's tokenizer; a folder without a vocabulary file is refused (not a 1-token one)."""
    from transformers import AutoTokenizer

    local = resolve_model_folder(folder, allow_hub=allow_hub)
    tokenizer_config = local / "tokenizer_config.json"
    if tokenizer_config.is_file():
        refuse_remote_code(
            tokenizer_config,
            read_json_object(tokenizer_config, "re-copy the base model's tokenizer files").get(
                "auto_map"
            ),
            trust_remote_code,
        )
    if not any(any(local.glob(pattern)) for pattern in _VOCAB_PATTERNS):
        raise ModelError(
            f"{local}: no tokenizer files (tokenizer.json, vocab.json, tokenizer.model, ...); "
            "copy the base model's tokenizer files into it"
        )
    try:
        return AutoTokenizer.from_pretrained(
            local, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except _LOAD_ERRORS as exc:
        raise ModelError(
            f"{local}: cannot load the tokenizer ({_first_line(exc)}); copy the base model's tokenizer files"
        ) from None


def _names(names: Sequence[str]) -> str:
    more = f" (+{len(names) - _NAMED} more)" if len(names) > _NAMED else ""
    return ", ".join(names[:_NAMED]) + more


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
