"""Fixtures of the report tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_fixture_run import build_fixture_run


@pytest.fixture(scope="session")
def _fixture_run_template(tmp_path_factory) -> Path:
    return build_fixture_run(tmp_path_factory.mktemp("template") / "demo17")


@pytest.fixture
def fixture_run(_fixture_run_template, tmp_path) -> Path:
    """A run folder with every section the headline and mistakes JSON feed (see the module),
    a fresh copy for each test (plotting it once per session)."""
    return Path(shutil.copytree(_fixture_run_template, tmp_path / "demo17"))
