"""Checks done before any byte is written: right base, every key lands, shapes agree."""

from __future__ import annotations

from collections.abc import Sequence

from medmerge.errors import MergeError
from medmerge.merge.adapters import Adapter
from medmerge.merge.checkpoint import Checkpoint
from medmerge.merge.config import MergeConfig

_IDENTITY_KEYS = ("config_sha256", "weights_digest")


def recorded_base_mismatch(adapter: Adapter, identity: dict[str, str]) -> str | None:
    """A one-line description of how the adapter's recorded base differs, or None."""
    recorded = (adapter.manifest or {}).get("base") or {}
    for key in _IDENTITY_KEYS:
        if recorded.get(key) and recorded[key] != identity.get(key):
            what = "config" if key == "config_sha256" else "weights"
            return (
                f"{adapter.path}: adapter was trained on {recorded.get('path', 'another base')} whose {what} "
                f"differ from --base {identity.get('path')}; pass the base it was trained on"
            )
    return None


def has_recorded_base(adapter: Adapter) -> bool:
    recorded = (adapter.manifest or {}).get("base") or {}
    return any(recorded.get(key) for key in _IDENTITY_KEYS)


def check_identity(adapters: Sequence[Adapter], identity: dict[str, str]) -> None:
    for adapter in adapters:
        problem = recorded_base_mismatch(adapter, identity)
        if problem:
            raise MergeError(problem)


def check_shapes(adapters: Sequence[Adapter], base: Checkpoint) -> None:
    """Every adapter tensor must land on a base tensor of the matching shape."""
    for adapter in adapters:
        for name, shape in _adapter_shapes(adapter):
            entry = base.entries.get(name)
            if entry is None:
                raise MergeError(
                    f"{adapter.path}: adapter changes {name!r} but the base has no such tensor; "
                    "the adapter was made for another model architecture, pass its base"
                )
            if tuple(entry.shape) != tuple(shape):
                raise MergeError(
                    f"{adapter.path}: delta for {name!r} has shape {tuple(shape)} but the base tensor is "
                    f"{tuple(entry.shape)}; the adapter was made for another base model, pass that one"
                )


def _adapter_shapes(adapter: Adapter):
    for name, factors in adapter.factors.items():
        out_features, in_features = factors.B.shape[0], factors.A.shape[1]
        yield (
            name,
            (in_features, out_features) if factors.transpose else (out_features, in_features),
        )
        if factors.bias is not None:
            yield name[: -len(".weight")] + ".bias", tuple(factors.bias.shape)
    for name, tensor in {**adapter.full_copies, **adapter.base_copies}.items():
        yield name, tuple(tensor.shape)


def check_weights(cfg: MergeConfig) -> None:
    """Per-group and per-layer weights need one weight per adapter; layer ranges must be ordered."""
    count = len(cfg.adapters)
    problems = [
        f"group_weights.{group} has {len(weights)} weights for {count} adapters"
        for group, weights in cfg.group_weights.items()
        if len(weights) != count
    ]
    for index, span in enumerate(cfg.layer_ranges):
        if len(span.weights) != count:
            problems.append(
                f"layer_ranges[{index}] has {len(span.weights)} weights for {count} adapters"
            )
        if span.first > span.last:
            problems.append(f"layer_ranges[{index}] has first {span.first} > last {span.last}")
    if cfg.method == "linear" and cfg.density is not None and cfg.density < 1:
        problems.append(
            "density applies to ties, dare_linear, dare_ties and magnitude_prune, not linear"
        )
    if cfg.export != "full" and cfg.method != "linear":
        problems.append(
            f"a merged adapter is exact only for method linear, not {cfg.method}; use --export full"
        )
    if problems:
        raise MergeError("; ".join(problems) + "; fix the merge config")
