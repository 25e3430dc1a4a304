"""Write artifact folders so that nothing half-written ever looks finished.

Work goes into a temporary sibling folder that is renamed into place only when complete.
An existing target is never overwritten unless the user says `--force`, and even then it
is replaced only after the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from medmerge.errors import MedmergeError

STAGING_PREFIX = ".medmerge-tmp-"


def check_output_free(out: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing, non-empty output folder unless `force`."""
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise MedmergeError(
            f"{target}: output path exists and is not a folder; choose another --out"
        )
    if target.is_dir() and any(target.iterdir()) and not force:
        raise MedmergeError(
            f"{target}: output folder exists and is not empty; choose another --out or pass --force"
        )
    return target


@contextlib.contextmanager
def staged_output(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `out`; on success rename it to `out`.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and `out`
    is left exactly as it was.
    """
    target = check_output_free(out, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        trash = target.parent / f"{STAGING_PREFIX}{target.name}-old-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
