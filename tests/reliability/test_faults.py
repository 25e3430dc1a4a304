"""Fault injection through the CLI: one clear line, exit status 2, nothing half-written."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import merge_argv
from helpers.cli import MEDMERGE, assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _train_args(base, data, out) -> list[str]:
    return ["train", "pt", "--base", str(base), "--data", str(data), "--out", str(out)]


# ------------------------------------------------------------------ missing and unreadable paths


@pytest.mark.parametrize("command", ["train", "merge", "verify", "eval-gen", "eval-mcq", "score"])
def test_missing_path(command, tiny_base, adapters, tmp_path):
    missing = tmp_path / "does-not-exist"
    argv = {
        "train": [
            "train",
            "pt",
            "--base",
            str(tiny_base),
            "--data",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ],
        "merge": merge_argv(tiny_base, missing, adapters["sft"], tmp_path / "o"),
        "verify": ["verify", "--base", str(tiny_base), "--merged", str(missing)],
        "eval-gen": [
            "eval",
            "gen",
            "--model",
            str(missing),
            "--data",
            str(REPO / "data/qa_en/meqsum_sample.jsonl"),
            "--out",
            str(tmp_path / "o"),
        ],
        "eval-mcq": [
            "eval",
            "mcq",
            "--model",
            str(tiny_base),
            "--data",
            str(missing),
            "--out",
            str(tmp_path / "o"),
        ],
        "score": ["score", "--predictions", str(missing), "--out", str(tmp_path / "o")],
    }[command]
    assert_user_error(run_cli(*argv), "does-not-exist")
    assert not (tmp_path / "o").exists()


def test_unreadable_data_file(tiny_base, adapters, tmp_path):
    data = tmp_path / "locked.jsonl"
    shutil.copyfile(adapters["texts"], data)
    data.chmod(0)
    result = run_cli(
        "train", "pt", "--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "o")
    )
    data.chmod(0o644)
    if result.code == 0:
        pytest.skip("running as a user who can read mode-0 files (root without DAC checks)")
    assert_user_error(result, "locked.jsonl")


# ------------------------------------------------------------------ damaged adapters and checkpoints


def test_truncated_adapter_weights(tiny_base, adapters, tmp_path):
    broken = _copy(adapters["pt"], tmp_path / "pt")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    line = assert_user_error(
        run_cli(*merge_argv(tiny_base, broken, adapters["sft"], tmp_path / "m"))
    )
    assert "adapter_model.safetensors" in line
    assert not (tmp_path / "m").exists()


def test_corrupted_base_checkpoint(tiny_base, adapters, tmp_path):
    base = _copy(tiny_base, tmp_path / "base")
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:40] = b"{not a safetensors header at all!"[:32]
    weights.write_bytes(bytes(data))
    assert_user_error(
        run_cli(*merge_argv(base, adapters["pt"], adapters["sft"], tmp_path / "m")),
        "model.safetensors",
    )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("damage", ["missing", "malformed"])
def test_adapter_config_damaged(damage, tiny_base, adapters, tmp_path):
    broken = _copy(adapters["sft"], tmp_path / "sft")
    config = broken / "adapter_config.json"
    if damage == "missing":
        config.unlink()
    else:
        config.write_text('{"r": 8, "lora_alpha": ')
    line = assert_user_error(
        run_cli(*merge_argv(tiny_base, adapters["pt"], broken, tmp_path / "m"))
    )
    assert "adapter_config.json" in line


def test_weights_list_must_match_adapters(tiny_base, adapters, tmp_path):
    config = tmp_path / "merge.yaml"
    config.write_text(
        f"base: {tiny_base}\nadapters:\n  - path: {adapters['pt']}\n    weight: [0.3, 0.7]\nout: {tmp_path / 'm'}\n"
    )
    assert_user_error(run_cli("merge", "--config", str(config)), "weight")


@pytest.mark.parametrize("weights", [("0", "1"), ("-0.5", "1"), ("0.6", "0.9")])
def test_unusual_weights_are_allowed_and_reported(weights, tiny_base, adapters, tmp_path):
    out = tmp_path / "m"
    argv = ["merge", "--base", str(tiny_base), "--adapter", f"{adapters['pt']}={weights[0]}"]
    argv += ["--adapter", f"{adapters['sft']}={weights[1]}", "--out", str(out), "--dtype", "fp32"]
    result = run_cli(*argv)
    assert result.code == 0, result.stderr[-2000:]
    manifest = json.loads((out / "medmerge_manifest.json").read_text())
    assert [a["weight"] for a in manifest["adapters"]] == [float(w) for w in weights]


def test_pickle_adapter_refused_without_flag(tiny_base, adapters, tmp_path):
    import torch
    from safetensors.torch import load_file

    broken = _copy(adapters["pt"], tmp_path / "pt")
    tensors = load_file(broken / "adapter_model.safetensors")
    (broken / "adapter_model.safetensors").unlink()
    torch.save(tensors, broken / "adapter_model.bin")
    assert_user_error(
        run_cli(*merge_argv(tiny_base, broken, adapters["sft"], tmp_path / "m")), "--allow-pickle"
    )


# ------------------------------------------------------------------ bad data


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b'{"instruction": "q", "output": "a"}\n{"instruction": "q2"\n', ":2"),
        (b'{"instruction": "q", "input": ""}\n', "output"),
        (b'{"instruction": "caf\xe9", "output": "a"}\n', ":1"),
    ],
    ids=["empty", "invalid-json-line-2", "missing-field", "non-utf8"],
)
def test_bad_sft_data(content, needle, tiny_base, tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_bytes(content)
    result = run_cli(
        "train", "sft", "--base", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "o")
    )
    assert_user_error(result, "qa.jsonl", needle)
    assert not (tmp_path / "o").exists()


def test_mcq_answer_not_among_options(tiny_base, tmp_path):
    data = tmp_path / "medqa.jsonl"
    record = {
        "question": "Which?",
        "options": {"A": "x", "B": "y", "C": "z", "D": "w"},
        "answer_idx": "F",
    }
    data.write_text(json.dumps(record) + "\n")
    result = run_cli(
        "eval", "mcq", "--model", str(tiny_base), "--data", str(data), "--out", str(tmp_path / "o")
    )
    assert_user_error(result, "medqa.jsonl:1")


@pytest.mark.parametrize(
    ("argv_tail", "needle"),
    [
        (["--method", "tiess"], "ties"),
        (["--dtype", "fp32", "--set", "methd=ties"], "method"),
    ],
)
def test_unknown_names_get_did_you_mean(argv_tail, needle, tiny_base, adapters, tmp_path):
    result = run_cli(
        *merge_argv(tiny_base, adapters["pt"], adapters["sft"], tmp_path / "m"), *argv_tail
    )
    assert "did you mean" in assert_user_error(result, needle)


def test_unknown_preset_is_one_line(tiny_base, adapters, tmp_path):
    data = str(REPO / "data/qa_en/meqsum_sample.jsonl")
    result = run_cli(
        "eval",
        "gen",
        "--model",
        str(tiny_base),
        "--data",
        data,
        "--preset",
        "D",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.code == 2 and "Traceback" not in result.stderr


# ------------------------------------------------------------------ existing outputs, disk full, signals


def test_existing_output_refused_and_untouched(tiny_base, adapters, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    assert_user_error(
        run_cli(*merge_argv(tiny_base, adapters["pt"], adapters["sft"], out)), "--force"
    )
    assert (out / "precious.txt").read_text() == "mine"


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG

    return apply


def test_disk_full_during_merge_leaves_nothing_finished(tiny_base, adapters, tmp_path):
    out = tmp_path / "m"
    result = run_cli(
        *merge_argv(tiny_base, adapters["pt"], adapters["sft"], out),
        "--dtype",
        "fp32",
        preexec=_limit_file_size(50_000),
    )
    assert result.code != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".medmerge-tmp-")]


def test_disk_full_during_training_leaves_nothing_finished(tiny_base, adapters, tmp_path):
    out = tmp_path / "a"
    argv = _train_args(tiny_base, adapters["texts"], out)
    result = run_cli(
        *argv, "--max-steps", "2", "--set", "cutoff_len=32", preexec=_limit_file_size(20_000)
    )
    assert result.code != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not out.exists()


def _kill_when(args: list[str], ready, sig: int, timeout: float = 240) -> subprocess.Popen:
    process = subprocess.Popen(
        [MEDMERGE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A job started in the background of a script inherits SIGINT ignored, and Python then
        # installs no KeyboardInterrupt handler: give the child Ctrl-C as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    # Freeze it first, so the signal lands in the state `ready` saw: a fast command could
    # otherwise finish (rename its staging into place) between the check and the signal.
    process.send_signal(signal.SIGSTOP)
    process.still_ready = ready()  # type: ignore[attr-defined]
    process.send_signal(sig)
    process.send_signal(signal.SIGCONT)
    process.wait(timeout=60)
    return process


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_training_resumes(sig, tiny_base, adapters, tmp_path):
    out = tmp_path / "pt"
    argv = _train_args(tiny_base, adapters["texts"], out)
    argv += [
        "--max-steps",
        "40",
        "--set",
        "save_steps=2",
        "--set",
        "cutoff_len=32",
        "--set",
        "batch_size=2",
    ]
    partial = tmp_path / "pt.partial"
    _kill_when(argv, lambda: (partial / "step-2" / "complete").is_file(), sig)
    assert not out.exists(), "an interrupted run must not look finished"
    assert (partial / "step-2" / "complete").is_file()
    result = run_cli(*argv)
    assert result.code == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout + result.stderr
    assert json.loads((out / "medmerge_manifest.json").read_text())["steps"] == 40


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_killed_merge_leaves_finished_work_alone(sig, tiny_base, adapters, tmp_path):
    finished = tmp_path / "merged"
    fp32 = [*merge_argv(tiny_base, adapters["pt"], adapters["sft"], finished), "--dtype", "fp32"]
    args = [*merge_argv(tiny_base, adapters["pt"], adapters["sft"], finished), "--force"]
    args += ["--dtype", "bf16"]
    for attempt in range(5):  # the tiny merge can be done before it is stopped: then again
        first = run_cli(*fp32, *(["--force"] if attempt else []))
        assert first.code == 0, first.stderr[-2000:]
        before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
        staging = lambda: any(p.name.startswith(".medmerge-tmp-") for p in tmp_path.iterdir())  # noqa: E731
        if _kill_when(args, staging, sig).still_ready:
            break
    else:
        pytest.fail("the merge finished before it could be stopped, five times")
    after = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    assert after == before, "a killed --force merge must leave the finished folder as it was"


# ------------------------------------------------------------------ the experiment commands


def test_sweep_config_problems_are_one_line(tmp_path):
    assert_user_error(run_cli("sweep", str(tmp_path / "nope.yaml")), "nope.yaml")
    bad = tmp_path / "sweep.yaml"
    bad.write_text("base: b\nout: o\ngrid: [0.1\n")
    assert_user_error(run_cli("sweep", str(bad)), "sweep.yaml")


def test_run_with_unknown_stage_key(tmp_path):
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("out: o\nbase: base.yaml\nmerg: merge.yaml\n")
    assert "did you mean" in assert_user_error(run_cli("run", str(pipeline)), "merg")


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    assert_user_error(run_cli("report", str(tmp_path / "missing")), "missing")


def test_audit_with_missing_eval_file(adapters, tmp_path):
    argv = [
        "audit",
        "leakage",
        "--train",
        str(adapters["texts"]),
        "--eval",
        str(tmp_path / "gone.jsonl"),
    ]
    result = run_cli(*argv, "--out", str(tmp_path / "audit"))
    assert_user_error(result, "gone.jsonl")


def test_verify_reports_a_broken_merge_with_exit_1(tiny_base, adapters, tmp_path):
    out = tmp_path / "m"
    assert (
        run_cli(
            *merge_argv(tiny_base, adapters["pt"], adapters["sft"], out), "--dtype", "fp32"
        ).code
        == 0
    )
    swapped = ["--adapter", f"{adapters['pt']}=0.7", "--adapter", f"{adapters['sft']}=0.3"]
    result = run_cli(
        "verify", "--base", str(tiny_base), "--merged", str(out), *swapped, "--no-logits"
    )
    assert result.code == 1, result.stderr[-2000:]
    assert json.loads((out / "verify.json").read_text())["ok"] is False


def _sweep_config(tmp_path: Path, tiny_base, adapters) -> Path:
    config = {
        "base": str(tiny_base),
        "adapters": [
            {"path": str(adapters["pt"]), "label": "pt"},
            {"path": str(adapters["sft"]), "label": "sft"},
        ],
        "grid": {"pt": [0.0, 0.25, 0.5, 0.75, 1.0], "sft": "complement"},
        "templates": [{"template": "qwen3", "enable_thinking": False}],
        "decodings": {"greedy": {"preset": "A", "max_new_tokens": 8}},
        "suites": {
            "gen": [
                {
                    "name": "meqsum",
                    "data": str(REPO / "data/qa_en/meqsum_sample.jsonl"),
                    "format": "columns",
                    "limit": 4,
                    "columns": {"prompt": "question", "reference": "summary"},
                }
            ],
            "mcq": [
                {"name": "headqa", "data": [str(REPO / "data/mcq_en/dev_HEAD_EN.json")], "limit": 8}
            ],
        },
        "device": "cpu",
        "progress": False,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_killed_sweep_resumes_from_finished_points(tiny_base, adapters, tmp_path):
    config, out = _sweep_config(tmp_path, tiny_base, adapters), tmp_path / "sweep"
    points = out / "points"
    _kill_when(
        ["sweep", str(config), "--out", str(out)],
        lambda: len(list(points.glob("*.json"))) >= 2,
        signal.SIGKILL,
    )
    finished = len(list(points.glob("*.json")))
    assert finished >= 2
    result = run_cli("sweep", str(config), "--out", str(out))
    assert result.code == 0, result.stderr[-2000:]
    assert f"({finished} already done)" in result.stdout
    assert len((out / "table.csv").read_text().splitlines()) == 1 + 5


def test_killed_eval_leaves_no_output_and_reruns(tiny_base, adapters, tmp_path):
    merged = tmp_path / "merged"
    assert (
        run_cli(
            *merge_argv(tiny_base, adapters["pt"], adapters["sft"], merged), "--dtype", "fp32"
        ).code
        == 0
    )
    out = tmp_path / "eval"
    data = str(REPO / "data/mcq_en/dev_HEAD_EN.json")
    args = [
        "eval",
        "mcq",
        "--model",
        str(merged),
        "--data",
        data,
        "--out",
        str(out),
        "--limit",
        "200",
        "--template",  # as the SFT adapter was trained
        "qwen3",
        "--no-enable-thinking",
    ]
    staging = lambda: any(p.name.startswith(".medmerge-tmp-eval") for p in tmp_path.iterdir())  # noqa: E731
    killed = _kill_when(args, staging, signal.SIGKILL)
    assert staging(), killed.stderr.read().decode()[-2000:]
    assert not out.exists()
    result = run_cli(*args)
    assert result.code == 0, result.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["n"] == 200
