"""Evaluation: model backends, multiple-choice and generation tasks, metrics and leak rates."""

from medmerge.eval.config import GenEvalConfig, McqEvalConfig, SafetyConfig, ScoreConfig
from medmerge.eval.run import run_gen_eval, run_mcq_eval, run_safety_eval, run_score

__all__ = [
    "GenEvalConfig",
    "McqEvalConfig",
    "SafetyConfig",
    "ScoreConfig",
    "run_gen_eval",
    "run_mcq_eval",
    "run_safety_eval",
    "run_score",
]
