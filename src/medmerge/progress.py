"""One progress bar for every long loop: rich when on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(
        self,
        progress: Progress | None,
        task: int | None,
        total: int,
        label: str,
        silent: bool = False,
    ) -> None:
        self._progress, self._task, self._total, self._label = progress, task, total, label
        self._silent = silent
        self._done = 0
        self._last_print = 0.0

    def advance(self, steps: int = 1, **metrics: float) -> None:
        """Move on `steps` and show the latest metrics (loss, tokens/s, ...)."""
        self._done += steps
        text = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        if self._progress is not None:
            self._progress.update(self._task, advance=steps, metrics=text)
            return
        if self._silent:
            return
        now = time.monotonic()
        if now - self._last_print > 10 or self._done == self._total:
            self._last_print = now
            print(f"{self._label}: {self._done}/{self._total} {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress_bar(total: int, label: str, enabled: bool = True) -> Iterator[_Bar]:
    """A bar of `total` steps; on a non-terminal stderr, a line every 10 s instead."""
    if not enabled or not sys.stderr.isatty():
        yield _Bar(None, None, total, label, silent=not enabled)
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(label, total=total, metrics="")
        yield _Bar(progress, task, total, label)
