"""What one merge is: adapters at weights, a per-tensor weight plan, a method and its
parameters, made from a stage config or read back from a merged folder's manifest.

Merge, verify, eval and sweeps build it here rather than each restating the rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medmerge.architectures import Architecture
from medmerge.config import StageConfig
from medmerge.errors import ConfigError, MergeError
from medmerge.lora.adapters import Adapter, load_adapter
from medmerge.lora.methods import METHODS, MethodParams, get_method
from medmerge.lora.plan import WeightPlan


class AdapterWeight(StageConfig):
    """One adapter folder and the weight its delta enters the merge with."""

    path: str
    weight: float


@dataclass(frozen=True)
class MergeSpec:
    """Adapters (folder and global weight), the weight plan, the method and its parameters."""

    adapters: tuple[AdapterWeight, ...]
    plan: WeightPlan
    method: str = "linear"
    params: MethodParams = field(default_factory=MethodParams)

    @classmethod
    def from_config(cls, cfg: Any) -> MergeSpec:
        """From a stage config with `adapters` and `method` (MergeConfig, eval's ModelSpec) and,
        where it has them, `group_weights`, `layer_ranges`, `density` and `seed`; refuses a
        plan that does not fit the adapters (one line, exit 2)."""
        ranges = getattr(cfg, "layer_ranges", None) or []
        return cls.build(
            adapters=cfg.adapters,
            method=cfg.method,
            group_weights=getattr(cfg, "group_weights", None) or {},
            layer_ranges=[(r.first, r.last, r.weights) for r in ranges],
            density=getattr(cfg, "density", None),
            seed=getattr(cfg, "seed", 0) or 0,
        )

    @classmethod
    def from_manifest(
        cls,
        manifest: Mapping[str, Any],
        where: str,
        adapters: Sequence[AdapterWeight] | None = None,
        method: str | None = None,
    ) -> MergeSpec:
        """The merge a merged folder's medmerge manifest records (`where` names it in errors).

        `adapters` replace the recorded ones (then at their global weights only) and `method`
        the recorded method: verify's flags, for merges made by other tools.
        """
        recorded = manifest.get("config")
        if adapters is None and isinstance(recorded, dict) and recorded.get("adapters"):
            ranges = recorded.get("layer_ranges") or []
            spec = cls.build(
                adapters=[AdapterWeight(**a) for a in recorded["adapters"]],
                method=recorded.get("method") or "linear",
                group_weights=recorded.get("group_weights") or {},
                layer_ranges=[(r["first"], r["last"], r["weights"]) for r in ranges],
                density=recorded.get("density"),
                seed=recorded.get("seed") or 0,
            )
        else:
            listed = adapters or [
                AdapterWeight(path=a["path"], weight=a["weight"])
                for a in manifest.get("adapters", [])
            ]
            if not listed:
                raise ConfigError(
                    f"{where}: no merge manifest names the adapters; pass --adapter PATH=WEIGHT "
                    "for each"
                )
            params = MethodParams(
                density=manifest.get("density") or 1.0, seed=manifest.get("seed") or 0
            )
            spec = cls(
                tuple(listed),
                WeightPlan(tuple(a.weight for a in listed)),
                manifest.get("method") or "linear",
                params,
            )
        if method is not None:
            spec = dataclasses.replace(spec, method=method)
        get_method(spec.method)
        return spec

    @classmethod
    def build(
        cls,
        adapters: Sequence[AdapterWeight],
        method: str = "linear",
        group_weights: Mapping[str, Sequence[float]] | None = None,
        layer_ranges: Sequence[tuple[int, int, Sequence[float]]] = (),
        density: float | None = None,
        seed: int = 0,
    ) -> MergeSpec:
        """A checked spec: a known method, parameters it takes, one weight per adapter."""
        merge_method = get_method(method)
        problems = _plan_problems(len(adapters), group_weights or {}, layer_ranges)
        if "density" not in merge_method.parameters and density is not None and density < 1:
            takes = [n for n, m in METHODS.items() if "density" in m.parameters]
            problems.append(
                f"density applies to {', '.join(takes[:-1])} and {takes[-1]}, not {method}"
            )
        if problems:
            raise MergeError("; ".join(problems) + "; fix the merge config")
        plan = WeightPlan(
            weights=tuple(a.weight for a in adapters),
            group_weights={g: tuple(w) for g, w in (group_weights or {}).items()},
            layer_ranges=tuple((first, last, tuple(w)) for first, last, w in layer_ranges),
        )
        params = MethodParams(density=density or 1.0, seed=seed)
        return cls(tuple(adapters), plan, method, params)

    def on(self, architecture: Architecture) -> MergeSpec:
        """This spec with its layers and groups found the way `architecture` names tensors."""
        return dataclasses.replace(self, plan=self.plan.on(architecture))

    def load(self, allow_pickle: bool = False) -> list[Adapter]:
        """Read and validate every adapter folder, in order."""
        return [load_adapter(a.path, allow_pickle) for a in self.adapters]


def _plan_problems(
    count: int,
    group_weights: Mapping[str, Sequence[float]],
    layer_ranges: Sequence[tuple[int, int, Sequence[float]]],
) -> list[str]:
    """Per-group and per-layer weights need one weight per adapter; layer ranges must be ordered."""
    problems = [
        f"group_weights.{group} has {len(weights)} weights for {count} adapters"
        for group, weights in group_weights.items()
        if len(weights) != count
    ]
    for index, (first, last, weights) in enumerate(layer_ranges):
        if len(weights) != count:
            problems.append(
                f"layer_ranges[{index}] has {len(weights)} weights for {count} adapters"
            )
        if first > last:
            problems.append(f"layer_ranges[{index}] has first {first} > last {last}")
    return problems
