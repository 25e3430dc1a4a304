"""Reuse the merge tests' tiny base and stock-PEFT adapters (the `models` session fixture)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_MERGE_TESTS = Path(__file__).parents[1] / "merge"
sys.path.insert(0, str(_MERGE_TESTS))
_spec = importlib.util.spec_from_file_location("merge_conftest", _MERGE_TESTS / "conftest.py")
_merge_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_merge_conftest)
models = _merge_conftest.models
