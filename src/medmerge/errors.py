"""One error family and the exit codes the CLI promises.

0 success; 1 a check that ran and failed (verify WRONG); 2 bad input or unsupported (a
MedmergeError: one line); 3 an internal error (a bug: one line plus a saved traceback);
130 interrupted (SIGINT), 143 terminated (SIGTERM) — staging removed, finished artifacts kept.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class MedmergeError(Exception):
    """A problem with the user's input: printed as one line, exit status `exit_code`."""

    exit_code = 2


class ConfigError(MedmergeError, ValueError):
    """A config file or flag is wrong (unknown key, bad value, missing field)."""


class DataError(MedmergeError, ValueError):
    """A data file is missing or malformed; the message names file and line."""


class ModelError(MedmergeError, ValueError):
    """A model or adapter folder is missing, unreadable or inconsistent."""


class MergeError(MedmergeError, ValueError):
    """A merge cannot be done as asked (foreign adapter, unknown method, ...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that staging is cleaned up as for Ctrl-C."""


class VerificationError(MedmergeError):
    """A merged checkpoint failed verification (exit status 1, not a usage error)."""

    exit_code = 1


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> str:
    """A one-line message for a name that is not one of `choices`."""
    choices = sorted(choices)
    return (
        f"unknown {kind} {name!r}{did_you_mean(name, choices)}; choose one of: {', '.join(choices)}"
    )
