"""Fixtures of the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixture_run import build_fixture_run


@pytest.fixture
def fixture_run(tmp_path) -> Path:
    """A run folder with every section the headline and mistakes JSON feed (see the module)."""
    return build_fixture_run(tmp_path / "demo17")
