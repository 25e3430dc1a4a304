"""The weighted merge W' = W + sum_i w_i * s_i * B_i @ A_i, streamed shard by shard."""

from medmerge.merge.adapters import Adapter, LoraFactors, load_adapter
from medmerge.merge.config import MergeConfig
from medmerge.merge.delta import WeightPlan, apply_merged_delta, intended_delta, restore_weights
from medmerge.merge.methods import METHODS, get_method
from medmerge.merge.run import run_merge

__all__ = [
    "METHODS",
    "Adapter",
    "LoraFactors",
    "MergeConfig",
    "WeightPlan",
    "apply_merged_delta",
    "get_method",
    "intended_delta",
    "load_adapter",
    "restore_weights",
    "run_merge",
]
