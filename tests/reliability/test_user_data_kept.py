"""Nothing the user made is lost: outputs never replace inputs, a second writer is refused,
the free-check is repeated at rename time, killed runs' staging is reaped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_one_error, merge_argv, verify_argv
from medmerge import artifacts
from medmerge.artifacts import lock_path, staged_output
from medmerge.cli import main
from medmerge.errors import MedmergeError


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path: equal digests = nothing changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_error(capsys, code: int, *needles: str) -> str:
    return assert_one_error(code, capsys.readouterr().err, *needles)


@pytest.fixture
def run_folder(tmp_path) -> Path:
    run = tmp_path / "run"
    for stage in ("base", "merged", "sweep"):
        (run / stage).mkdir(parents=True)
        (run / stage / "medmerge_manifest.json").write_text(json.dumps({"stage": stage}))
    (run / "merged" / "model.safetensors").write_bytes(b"weights the user waited for")
    return run


def _merge_argv(base, pt, sft, out, *extra) -> list[str]:
    return merge_argv(base, pt, sft, out, "--no-verify", *extra)


# ------------------------------------------------------------------ outputs onto inputs


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_report_onto_its_run_is_refused(run_folder, force, capsys):
    before = tree_digest(run_folder)
    code = main(["report", str(run_folder), "--out", str(run_folder), *force])
    one_error(capsys, code, str(run_folder))
    assert tree_digest(run_folder) == before


@pytest.mark.parametrize("stage", ["merged", "base"])
def test_report_onto_a_stage_of_its_run_is_refused(run_folder, stage, capsys):
    before = tree_digest(run_folder)
    code = main(["report", str(run_folder), "--out", str(run_folder / stage), "--force"])
    one_error(capsys, code, "input")
    assert tree_digest(run_folder) == before


def test_report_keeps_an_existing_folder_without_force(run_folder, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    code = main(["report", str(run_folder), "--out", str(mine)])
    one_error(capsys, code, "--force")
    assert (mine / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_report_default_folder_is_replaced_only_with_force(run_folder, capsys):
    assert main(["report", str(run_folder)]) == 0
    first = tree_digest(run_folder / "report")
    assert main(["report", str(run_folder)]) == 2
    assert tree_digest(run_folder / "report") == first
    capsys.readouterr()
    assert main(["report", str(run_folder), "--force"]) == 0  # its own earlier report


def test_audit_exclude_never_writes_onto_the_evaluation_file(tmp_path, repo, capsys):
    ev = tmp_path / "ev"
    ev.mkdir()
    shutil.copy(repo / "data/qa_en/meqsum_sample.jsonl", ev / "meq.jsonl")
    before = tree_digest(ev)
    train = repo / "data/sft_en/genmedgpt_sample.json"
    for force in ([], ["--force"]):
        code = main(
            [
                "audit",
                "leakage",
                "--train",
                str(train),
                "--eval",
                str(ev / "meq.jsonl"),
                "--exclude",
                str(ev),
                "--out",
                str(tmp_path / f"audit{len(force)}"),
                *force,
            ]
        )
        one_error(capsys, code)
        assert tree_digest(ev) == before
    assert not (tmp_path / "audit0").exists()


def test_audit_exclude_writes_a_fresh_folder(tmp_path, repo, capsys):
    train = repo / "data/sft_en/genmedgpt_sample.json"
    ev = repo / "data/qa_en/meqsum_sample.jsonl"
    argv = ["audit", "leakage", "--train", str(train), "--eval", str(ev)]
    argv += ["--exclude", str(tmp_path / "clean"), "--out", str(tmp_path / "audit")]
    assert main(argv) == 0
    kept = (tmp_path / "clean" / ev.name).read_text().splitlines()
    assert 0 < len(kept) <= len(ev.read_text().splitlines())
    assert (tmp_path / "clean" / "medmerge_manifest.json").is_file()


@pytest.mark.parametrize("target", ["base", "pt", "sft"])
def test_merge_force_never_targets_an_input(tmp_path, tiny_base, adapters, target, capsys):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    pt = shutil.copytree(adapters["pt"], tmp_path / "pt")
    sft = shutil.copytree(adapters["sft"], tmp_path / "sft")
    paths = {"base": base, "pt": pt, "sft": sft}
    before = {k: tree_digest(v) for k, v in paths.items()}
    code = main(_merge_argv(base, pt, sft, paths[target], "--force"))
    one_error(capsys, code, "input")
    assert {k: tree_digest(v) for k, v in paths.items()} == before


def test_verify_report_never_overwrites_an_input_file(tmp_path, tiny_base, capsys):
    base = shutil.copytree(tiny_base, tmp_path / "base")
    before = tree_digest(base)
    code = main(
        verify_argv(base, base, "--adapter", f"{base}=1", "--report", str(base / "config.json"))
    )
    one_error(capsys, code, "config.json")
    assert tree_digest(base) == before


def test_verify_report_replaces_only_an_earlier_report(tmp_path, tiny_base, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    code = main(
        verify_argv(tiny_base, tiny_base, "--adapter", f"{tiny_base}=1", "--report", str(notes))
    )
    one_error(capsys, code, "not a verify report")
    assert notes.read_text() == '{"mine": true}'


# ------------------------------------------------------------------ concurrent writers


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold_lock(target: Path, pid: int) -> None:
    import socket

    lock_path(target).parent.mkdir(parents=True, exist_ok=True)
    lock_path(target).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def test_a_second_merge_into_one_out_is_refused(tmp_path, tiny_base, adapters, live_pid, capsys):
    out = tmp_path / "merged"
    _hold_lock(out, live_pid)
    code = main(_merge_argv(tiny_base, adapters["pt"], adapters["sft"], out))
    one_error(capsys, code, f"pid {live_pid}")
    assert not out.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, tiny_base, adapters):
    out = tmp_path / "merged"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _hold_lock(out, dead.pid)
    assert main(_merge_argv(tiny_base, adapters["pt"], adapters["sft"], out)) == 0
    assert (out / "medmerge_manifest.json").is_file()
    assert not lock_path(out).exists()


def test_train_refuses_a_partial_another_process_holds(
    tmp_path, tiny_base, adapters, live_pid, capsys
):
    out = tmp_path / "pt"
    _hold_lock(out, live_pid)
    code = main(
        [
            "train",
            "pt",
            "--base",
            str(tiny_base),
            "--data",
            str(adapters["texts"]),
            "--out",
            str(out),
            "--max-steps",
            "1",
        ]
    )
    one_error(capsys, code, f"pid {live_pid}")
    assert not out.exists()
    assert not (tmp_path / "pt.partial").exists()


def test_verify_refuses_while_a_writer_holds_the_folder(tmp_path, tiny_base, live_pid, capsys):
    _hold_lock(tiny_base, live_pid)
    try:
        code = main(verify_argv(tiny_base, tiny_base, "--adapter", f"{tiny_base}=1", "--no-logits"))
    finally:
        lock_path(tiny_base).unlink()
    one_error(capsys, code, "writing it right now")


def test_a_folder_made_while_the_command_ran_is_kept(tmp_path):
    out = tmp_path / "out"
    with (
        pytest.raises(MedmergeError, match="appeared while this command ran"),
        staged_output(out) as staging,
    ):
        (staging / "result.txt").write_text("new")
        out.mkdir()
        (out / "user.txt").write_text("the user's")
    assert sorted(p.name for p in out.iterdir()) == ["user.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # staging and lock gone


def test_an_empty_folder_the_user_made_is_filled(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with staged_output(out) as staging:
        (staging / "result.txt").write_text("new")
    assert (out / "result.txt").read_text() == "new"


def test_stale_staging_of_the_same_target_is_reaped(tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / f"{artifacts.STAGING_PREFIX}out-0123abcd"
    stale_old = tmp_path / f"{artifacts.STAGING_PREFIX}out-old-89abcdef"
    other = tmp_path / f"{artifacts.STAGING_PREFIX}out-b-0123abcd"  # another target's
    for folder in (stale, stale_old, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    with staged_output(out) as staging:
        (staging / "a").write_text("a")
    assert not stale.exists() and not stale_old.exists()
    assert other.exists()


# ------------------------------------------------------------------ signals and exit codes


def test_sigterm_removes_staging_and_exits_143(tmp_path):
    out = tmp_path / "base"
    medmerge = str(Path(sys.executable).with_name("medmerge"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [medmerge, "base", "build", "--out", str(out), "--pretrain-steps", "100000"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(artifacts.STAGING_PREFIX) for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    assert list(tmp_path.iterdir()) == []


def test_an_internal_error_is_one_line_exit_3_with_a_saved_traceback(tmp_path, monkeypatch, capsys):
    import medmerge.report.build as build

    def broken(cfg):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(build, "build_report", broken)
    monkeypatch.setenv("MEDMERGE_TRACEBACK_DIR", str(tmp_path / "tb"))
    code = main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "internal error: RuntimeError: a bug" in err
    saved = list((tmp_path / "tb").iterdir())
    assert len(saved) == 1 and str(saved[0]) in err
    assert "Traceback" in saved[0].read_text() and "second line" in saved[0].read_text()


def test_a_path_that_is_not_utf8_is_refused_up_front(tmp_path, capsys):
    bad = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")
    code = main(["report", bad])
    one_error(capsys, code, "not valid UTF-8")


def test_out_under_a_file_is_one_line(tmp_path, run_folder, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["report", str(run_folder), "--out", str(blocker / "report")])
    one_error(capsys, code, "is a file")


def test_out_name_too_long_is_one_line(tmp_path, run_folder, capsys):
    code = main(["report", str(run_folder), "--out", str(tmp_path / ("r" * 240))])
    one_error(capsys, code, "too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_lock_whose_pid_was_reused_is_taken_over(tmp_path, live_pid):
    """A pid alive again as another process (started later than the lock says) is stale."""
    import socket

    out = tmp_path / "out"
    lock_path(out).write_text(
        json.dumps({"pid": live_pid, "host": socket.gethostname(), "started": 1.0})
    )
    with staged_output(out) as staging:
        (staging / "a").write_text("a")
    assert (out / "a").read_text() == "a"
