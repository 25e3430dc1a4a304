"""Run every row of the fault matrix (tests/reliability/fault_matrix.py) and hold it to the
README's contract: the documented exit status, one line, no traceback, nothing half-written,
every input byte-identical."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_matrix import FAULTS, Case, Fault, World

from medmerge.artifacts import LOCK_SUFFIX, STAGING_PREFIX
from medmerge.cli import main

REPO = Path(__file__).resolve().parents[2]
MEDMERGE = str(Path(sys.executable).with_name("medmerge"))


@pytest.fixture(scope="session")
def world_inputs(tiny_base, adapters, tmp_path_factory, repo) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    merged = root / "merged"
    argv = ["merge", "--base", str(tiny_base), "--adapter", f"{adapters['pt']}=0.3"]
    argv += ["--adapter", f"{adapters['sft']}=0.7", "--out", str(merged)]
    assert main(argv) == 0
    mcq = root / "mcq.jsonl"
    rows = [
        {
            "question": f"Which drug treats condition {i}?",
            "options": {"A": "aspirin", "B": "insulin", "C": "heparin", "D": "saline"},
            "answer_idx": "ABCD"[i % 4],
        }
        for i in range(8)
    ]
    mcq.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return {
        "base": tiny_base,
        "pt": adapters["pt"],
        "sft": adapters["sft"],
        "merged": merged,
        "texts": adapters["texts"],
        "sft_data": repo / "data/sft_en/genmedgpt_sample.json",
        "gen_data": repo / "data/qa_en/meqsum_sample.jsonl",
        "mcq_data": mcq,
    }


def digest(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) with its sha256; symlinks by their target."""
    if path.is_symlink():
        return {str(path): "->" + os.readlink(path)}
    if path.is_file():
        return {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    if not path.is_dir():
        return {str(path): "absent"}
    found: dict[str, str] = {}
    for item in sorted(path.rglob("*")):
        if item.is_symlink() or item.is_file():
            found.update(digest(item))
    return found


def leftovers(root: Path) -> list[Path]:
    """Staging folders, partial files and lock files anywhere under `root`."""
    return [
        p
        for p in root.rglob("*")
        if p.name.startswith(STAGING_PREFIX) or p.name.endswith(LOCK_SUFFIX)
    ]


def _run_subprocess(case: Case, tmp: Path) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [MEDMERGE, *case.argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=case.preexec,
    )
    if case.signal_after == "staging":
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(STAGING_PREFIX) for p in tmp.iterdir()):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _params():
    for fault in FAULTS:
        marks = [pytest.mark.slow] if fault.slow else []
        yield pytest.param(fault, id=fault.id, marks=marks)


@pytest.mark.parametrize("fault", _params())
def test_fault(fault: Fault, world_inputs, tmp_path, capsys, monkeypatch):
    tmp = tmp_path / "row"
    tmp.mkdir()
    world = World(**world_inputs, tmp=tmp)
    case = fault.build(world)
    if fault.id == "out-immutable-parent" and "i" not in _attributes(tmp / "locked"):
        pytest.skip("chattr +i is not available on this file system")
    shared = [world_inputs[k] for k in ("base", "pt", "sft", "merged", "mcq_data")]
    before = {str(p): digest(p) for p in [*case.inputs, *shared]}
    monkeypatch.setenv("MEDMERGE_TRACEBACK_DIR", str(tmp_path / "tracebacks"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a hub lookup fails fast, visibly
    try:
        if case.subprocess:
            code, err = _run_subprocess(case, tmp)
        else:
            capsys.readouterr()
            code = main(case.argv)
            err = capsys.readouterr().err
    finally:
        _release(tmp)
    assert code == fault.exit, f"{fault.id}: exit {code}, wanted {fault.exit}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    if fault.exit == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("medmerge: error:")]
        assert len(lines) == 1, err[-3000:]
        for needle in fault.needles:
            assert needle.lower() in lines[0].lower(), f"{needle!r} not in: {lines[0]}"
    after = {str(p): digest(p) for p in [*case.inputs, *shared]}
    assert after == before, f"{fault.id}: an input changed"
    if case.check is not None:
        case.check()
    for path in case.absent:
        assert not path.exists(), f"{fault.id}: {path} was written"
    left = [p for p in leftovers(tmp) if p not in case.inputs]  # a row's own lock is an input
    assert left == [], left


def _attributes(path: Path) -> str:
    done = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True)
    return done.stdout.split(" ")[0] if done.returncode == 0 else ""


def _release(tmp: Path) -> None:
    """Undo what a row set up to provoke its fault: the immutable flag, the lock holder."""
    locked = tmp / "locked"
    if locked.exists():
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
    holder = tmp / ".holder-pid"
    if holder.is_file():
        pid = int(holder.read_text())
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_reliability_doc_is_generated_from_the_matrix():
    spec = importlib.util.spec_from_file_location(
        "reliability_doc", REPO / "scripts/reliability_doc.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)  # loaded by path: the test leaves sys.path as it is
    render = script.render
    current = (REPO / "docs" / "reliability.md").read_text("utf-8")
    assert current == render(FAULTS), (
        "docs/reliability.md is out of date: run .venv/bin/python scripts/reliability_doc.py"
    )
