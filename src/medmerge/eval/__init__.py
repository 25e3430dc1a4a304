"""Evaluation: model backends, multiple-choice and generation tasks, metrics and leak rates.

The entry points below are imported on first use, so that reading `eval.metrics` (the report
and the sweep's Pareto front do) does not load the model backends.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GenEvalConfig": "medmerge.eval.config",
    "McqEvalConfig": "medmerge.eval.config",
    "SafetyConfig": "medmerge.eval.config",
    "ScoreConfig": "medmerge.eval.config",
    "run_gen_eval": "medmerge.eval.run",
    "run_mcq_eval": "medmerge.eval.run",
    "run_safety_eval": "medmerge.eval.run",
    "run_score": "medmerge.eval.run",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
