"""The weight each adapter enters the merge with, per tensor: global, per module group, per
layer range, with groups and layers found by the base's architecture (architectures.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from medmerge.architectures import GENERIC, Architecture


@dataclass(frozen=True)
class WeightPlan:
    """The weight of each adapter for each tensor: global, per module group, per layer range."""

    weights: tuple[float, ...]
    group_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)
    layer_ranges: tuple[tuple[int, int, tuple[float, ...]], ...] = ()
    architecture: Architecture = GENERIC

    @property
    def is_global(self) -> bool:
        """True when every tensor gets the global weights (no groups, no layer ranges)."""
        return not self.group_weights and not self.layer_ranges

    def on(self, architecture: Architecture) -> WeightPlan:
        """This plan with layers and groups found the way `architecture` names its tensors."""
        return dataclasses.replace(self, architecture=architecture)

    def for_tensor(self, name: str) -> tuple[float, ...]:
        """Layer ranges win over module groups, which win over the global weights."""
        layer = self.architecture.layer_of(name)
        if layer is not None:
            for first, last, weights in self.layer_ranges:
                if first <= layer <= last:
                    return weights
        group = self.architecture.group_of(name)
        if group in self.group_weights:
            return self.group_weights[group]
        return self.weights

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """A line for each layer range or group weight that selects none of `names` (the
        tensors the merge changes): it would silently do nothing."""
        names = list(names)
        layers = {self.architecture.layer_of(n) for n in names} - {None}
        groups = {self.architecture.group_of(n) for n in names}
        found = f"layers {min(layers)}..{max(layers)}" if layers else "no decoder-layer tensors"
        where = f"the adapters change {found} of this {self.architecture.name} model"
        problems = [
            f"layer_ranges[{index}] (layers {first}..{last}) matches no tensor: {where}"
            for index, (first, last, _) in enumerate(self.layer_ranges)
            if not any(first <= layer <= last for layer in layers)
        ]
        problems += [
            f"group_weights.{group} matches no tensor the adapters change on this "
            f"{self.architecture.name} model (its {group} modules: "
            f"{', '.join(self.architecture.groups.get(group, ())) or 'none'})"
            for group in self.group_weights
            if group not in groups
        ]
        return problems
