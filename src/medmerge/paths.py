"""Where the bundled sample data and the demo's configs live.

An installed wheel carries them as package data (medmerge/_bundle/data and
medmerge/_bundle/configs, mapped from the repository's data/ and configs/ by setup.py, so the
files exist once in git); a source checkout (an editable install) reads them where they are.
Both keep configs/ beside data/, so the configs' `../data/...` paths resolve either way.
"""

from __future__ import annotations

from pathlib import Path

from medmerge.errors import DataError

_PACKAGE = Path(__file__).resolve().parent
BUNDLE_ROOTS = (_PACKAGE / "_bundle", _PACKAGE.parents[1])  # the wheel's, a checkout's


def _bundle_root() -> Path:
    for root in BUNDLE_ROOTS:
        if (root / "data" / "README.md").is_file() and (root / "configs").is_dir():
            return root
    raise DataError(
        f"{BUNDLE_ROOTS[0] / 'data'}: bundled sample data not found (nor in a source "
        "checkout); reinstall medmerge from its wheel or source, or pass your own data files"
    )


def sample_data_dir() -> Path:
    """The bundled sample data `medmerge base build` and the demo read."""
    return _bundle_root() / "data"


def demo_configs_dir() -> Path:
    """The ready YAML files `medmerge demo` runs (configs/pipeline.yaml and its stages)."""
    return _bundle_root() / "configs"
