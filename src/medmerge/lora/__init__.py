"""The LoRA math, in one room: reading and validating adapters, per-module scaling, the merge
methods and their registry, dense and stacked deltas, the merge spec and the fit checks.

W' = W + method({s_i * B_i @ A_i}, {w_i}); linear: W + sum_i w_i * s_i * B_i @ A_i.
Used by merge, verify, eval, sweep and diagnose; it imports none of them.
"""

from medmerge.lora.adapters import Adapter, LoraFactors, load_adapter
from medmerge.lora.delta import (
    StackedFactors,
    adapter_deltas,
    all_finite,
    all_touched,
    apply_merged_delta,
    factors_ahead,
    intended_delta,
    merged_weight,
    restore_weights,
    stacked_factors,
)
from medmerge.lora.fit import check_fits, check_in_memory_merge, check_shapes
from medmerge.lora.methods import METHODS, MergeMethod, MethodParams, get_method
from medmerge.lora.plan import WeightPlan
from medmerge.lora.scaling import module_scale
from medmerge.lora.spec import AdapterWeight, MergeSpec

__all__ = [
    "METHODS",
    "Adapter",
    "AdapterWeight",
    "LoraFactors",
    "MergeMethod",
    "MergeSpec",
    "MethodParams",
    "StackedFactors",
    "WeightPlan",
    "adapter_deltas",
    "all_finite",
    "all_touched",
    "apply_merged_delta",
    "check_fits",
    "check_in_memory_merge",
    "check_shapes",
    "factors_ahead",
    "get_method",
    "intended_delta",
    "load_adapter",
    "merged_weight",
    "module_scale",
    "restore_weights",
    "stacked_factors",
]
