"""Where the bundled sample data lives (a source checkout's data/ folder)."""

from __future__ import annotations

from pathlib import Path

from medmerge.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]


def sample_data_dir() -> Path:
    """The bundled sample data; present in a source checkout, as `make demo` uses."""
    folder = REPO_ROOT / "data"
    if not (folder / "README.md").is_file():
        raise DataError(
            f"{folder}: bundled sample data not found; run from a medmerge source checkout "
            "or pass your own data files"
        )
    return folder
