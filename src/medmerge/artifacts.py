"""Write artifacts so that nothing half-written ever looks finished and nothing the user made is lost.

Work goes into a temporary sibling that is renamed into place only when complete. An existing
target is never overwritten unless the user says `--force`, and even then it is replaced only
after the new one is complete; `--force` never targets one of the command's own inputs. A lock
file beside each target keeps a second writer out, the free-check is repeated at rename time
(the rename itself refuses to clobber), and staging folders left by killed runs are reaped by
the next run of the same target.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from medmerge.errors import MedmergeError

STAGING_PREFIX = ".medmerge-tmp-"
LOCK_SUFFIX = ".medmerge-lock"
_HELD: dict[Path, int] = {}  # lock files this process holds -> nesting depth


class OutputInUseError(MedmergeError):
    """Another live process is writing the same target."""


# ---------------------------------------------------------------- inputs vs outputs


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve(strict=False)


def manifest_stage(folder: str | os.PathLike) -> str | None:
    """The `stage` a medmerge artifact folder's manifest names, else None."""
    try:
        with open(Path(folder) / "medmerge_manifest.json", encoding="utf-8") as handle:
            stage = json.load(handle).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
    return stage if isinstance(stage, str) else None


def guard_inputs(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None],
    replaceable: Callable[[Path], bool] | None = None,
) -> None:
    """Refuse an output that is, contains, or already exists inside one of the command's inputs.

    A new file or folder inside an input folder is fine (a run's default report/ folder); an
    existing one is part of the input (a base's config.json, a run's merged/ stage) unless
    `replaceable` says it is this command's own earlier output (an older report).
    """
    target = _resolved(out)
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if target == source:
            relation = "is"
        elif target in source.parents:
            relation = "contains"
        elif (
            source in target.parents
            and os.path.lexists(target)
            and not (replaceable is not None and replaceable(target))
        ):
            relation = "is part of"
        else:
            continue
        raise MedmergeError(
            f"{out}: this output {relation} the command's input {given}; writing it would "
            "replace what the command reads — choose an output path outside its inputs"
        )


# ---------------------------------------------------------------- locks


def lock_path(target: str | os.PathLike) -> Path:
    target = _resolved(target)
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no such process, or no psutil: fall back to the pid alone
        return None


def _owner_alive(owner: dict[str, Any]) -> bool:
    """The lock's writer still runs: its pid is alive and is the same process (not a reuse)."""
    if owner.get("host") != socket.gethostname():
        return True  # another machine's (a shared file system): it cannot be checked from here
    pid = int(owner.get("pid", -1))
    if not _pid_alive(pid):
        return False
    started = owner.get("started")
    return started is None or _start_time(pid) in (None, started)


def _lock_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, reader: str | None = None) -> Iterator[Path]:
    """Hold `.<name>.medmerge-lock` beside `target`; re-entrant within one process.

    A lock left by a dead process is taken over; one held by a live process is refused (for a
    `reader` such as verify, with a message saying the folder is being written right now).
    """
    path = lock_path(target)
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield path
        finally:
            _HELD[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps(
        {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}
    )
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path) or {}
            pid = int(owner.get("pid", -1))
            if owner and not _owner_alive(owner):
                path.unlink(missing_ok=True)  # left by a killed run
                continue
            if reader is not None:
                raise OutputInUseError(
                    f"{_resolved(target)}: medmerge process {pid} is writing it right now; "
                    f"{reader} it after that process has finished"
                ) from None
            raise OutputInUseError(
                f"{_resolved(target)}: another medmerge process (pid {pid}) is writing it "
                f"(lock {path}); wait for it to finish, or delete the lock file if that "
                "process is gone"
            ) from None
        except OSError as exc:
            raise _unwritable(_resolved(target), exc) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record)
        break
    else:  # pragma: no cover - a race with another taker twice in a row
        raise OutputInUseError(f"{_resolved(target)}: could not take the lock {path}; rerun")
    _HELD[path] = 1
    try:
        yield path
    finally:
        del _HELD[path]
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- staging and rename


def _staging_pattern(target: Path) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(STAGING_PREFIX + target.name)}-(old-)?[0-9a-f]{{8}}$")


def reap_staging(target: str | os.PathLike) -> list[Path]:
    """Remove staging siblings of `target` left by killed runs (call with the lock held)."""
    target = _resolved(target)
    if not target.parent.is_dir():
        return []
    pattern = _staging_pattern(target)
    reaped = []
    for entry in target.parent.iterdir():
        if pattern.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            reaped.append(entry)
    return reaped


def _renameat2() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return func


_RENAMEAT2 = _renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(source: Path, target: Path) -> None:
    """Rename `source` to `target`, failing with FileExistsError if `target` exists by then."""
    if _RENAMEAT2 is not None:
        rc = _RENAMEAT2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if rc == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    if os.path.lexists(target):  # no renameat2 here: the lock keeps other medmerge writers out
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    os.rename(source, target)


def check_output_free(out: str | os.PathLike, force: bool) -> Path:
    """Refuse an existing, non-empty output folder unless `force`."""
    target = Path(out)
    if os.path.lexists(target) and not target.is_dir():
        raise MedmergeError(
            f"{target}: output path exists and is not a folder; choose another --out"
        )
    if target.is_dir() and any(target.iterdir()) and not force:
        raise MedmergeError(
            f"{target}: output folder exists and is not empty; choose another --out or pass --force"
        )
    return target


def _taken_meanwhile(target: Path) -> MedmergeError:
    return MedmergeError(
        f"{target}: the output folder appeared while this command ran (another process or "
        "person made it); it was left as it is and this result was discarded — choose another "
        "--out, or pass --force to replace it"
    )


def _move_into_place(staging: Path, target: Path, force: bool) -> None:
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        with contextlib.suppress(OSError):
            target.rmdir()  # an empty folder the user made for us
    if not os.path.lexists(target):
        try:
            rename_noreplace(staging, target)
            return
        except FileExistsError:
            if not force:
                raise _taken_meanwhile(target) from None
    elif not force:
        raise _taken_meanwhile(target)
    trash = target.parent / f"{STAGING_PREFIX}{target.name}-old-{uuid.uuid4().hex[:8]}"
    os.replace(target, trash)
    try:
        rename_noreplace(staging, target)
    except FileExistsError:
        raise _taken_meanwhile(target) from None
    shutil.rmtree(trash, ignore_errors=True)


_LONGEST_SUFFIX = len(f"{STAGING_PREFIX}-old-00000000{LOCK_SUFFIX}")


def _unwritable(target: Path, exc: OSError) -> MedmergeError:
    return MedmergeError(
        f"{target}: cannot write the output there ({exc.strerror or exc}); choose a writable "
        "--out or fix the folder's permissions"
    )


def _make_parent(target: Path) -> None:
    """Create the output's parent folder, refusing in one line what no write could fix later."""
    if len(os.fsencode(target.name)) + _LONGEST_SUFFIX > 255:
        raise MedmergeError(
            f"{target.name[:40]}…: output name is too long ({len(os.fsencode(target.name))} bytes; "
            f"at most {255 - _LONGEST_SUFFIX} leave room for the staging name); choose a shorter --out"
        )
    for ancestor in [target.parent, *target.parent.parents]:
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise MedmergeError(
                    f"{target}: {ancestor} is a file, not a folder; choose an --out whose parent "
                    "is a folder"
                )
            break
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(target, exc) from None


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike,
    force: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    stage: str | None = None,
) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `out`; on success rename it to `out`.

    `inputs` are the paths the command reads: `out` may not be one of them, hold one, or be an
    existing part of one — except an earlier artifact of the same `stage` (its manifest says so).
    On any exception (KeyboardInterrupt and SIGTERM included) the temporary folder is removed
    and `out` is left exactly as it was.
    """
    target = check_output_free(out, force)
    guard_inputs(target, inputs, lambda p: stage is not None and manifest_stage(p) == stage)
    _make_parent(target)
    with output_lock(target):
        reap_staging(target)
        staging = target.parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
        except OSError as exc:
            raise _unwritable(target, exc) from None
        try:
            yield staging
            _move_into_place(staging, target, force)  # free-checked again, atomically
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


# ---------------------------------------------------------------- single files


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a file whole or not at all: a temporary sibling, fsynced, then renamed over `path`."""
    target = Path(path)
    partial = target.parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """`atomic_write_text` of an object's JSON (non-ASCII kept, unknown types as str)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n"
    return atomic_write_text(path, text)
