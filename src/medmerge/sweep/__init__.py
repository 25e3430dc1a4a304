"""Sweeps over merge weights with the base loaded once; interference diagnostics; mitigation."""

from medmerge.sweep.config import SweepConfig
from medmerge.sweep.run import run_sweep

__all__ = ["SweepConfig", "run_sweep"]
