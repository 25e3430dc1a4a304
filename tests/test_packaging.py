"""A plain (non-editable) install works away from the source checkout: the wheel carries the
sample data `base build` reads and the metric libraries `score` needs are installed with it.

The fresh venv sees this venv's site-packages through a .pth line (offline: nothing is
downloaded), but not its .pth files, so the editable install of the checkout stays out of it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "src", "data", "configs")


def _run(*argv: str | Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-4000:])
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with only the wheel of this checkout installed."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"  # a copy, so building leaves no build/ or egg-info in the repo
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        ignore = {"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
        copy(REPO / name, source / name, **(ignore if copy is shutil.copytree else {}))
    wheels = root / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        source,
        "--no-deps",
        "--no-build-isolation",
        "-w",
        wheels,
        "-q",
        cwd=root,
    )
    (wheel,) = wheels.glob("medmerge-*.whl")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root)
    purelib = Path(
        _run(
            venv / "bin/python",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=root,
        ).stdout.strip()
    )
    (purelib / "zz_medmerge_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        venv / "bin/python",
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        wheel,
        cwd=root,
    )
    return venv / "bin"


def test_the_installed_package_is_the_wheel(installed, tmp_path):
    where = _run(
        installed / "python", "-c", "import medmerge; print(medmerge.__file__)", cwd=tmp_path
    )
    assert not where.stdout.strip().startswith(str(REPO)), where.stdout
    bundle = _run(
        installed / "python",
        "-c",
        "from medmerge.paths import demo_configs_dir, sample_data_dir as d; print(d(), demo_configs_dir())",
        cwd=tmp_path,
    )
    data, configs = bundle.stdout.split()
    assert "site-packages" in data and (Path(configs) / "pipeline.yaml").is_file()


def test_base_build_runs_from_the_wheel(installed, tmp_path):
    small = tmp_path / "small.yaml"  # the bundled corpus, a tiny model, two steps
    small.write_text(
        "vocab_size: 512\nhidden_size: 32\nintermediate_size: 64\nnum_layers: 1\n"
        "num_heads: 2\nnum_kv_heads: 1\nhead_dim: 16\nbatch_size: 2\nseq_len: 32\n"
    )
    out = tmp_path / "base"
    _run(
        installed / "medmerge",
        "base",
        "build",
        "--config",
        small,
        "--out",
        out,
        "--pretrain-steps",
        "2",
        cwd=tmp_path,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_score_runs_from_the_wheel(installed, tmp_path):
    predictions = tmp_path / "preds.jsonl"
    rows = [
        {
            "prediction": "Take the tablets with food twice a day.",
            "reference": "Take the tablets with food twice a day.",
        },
        {"prediction": "发热三天，建议就医。", "reference": "发热三天，建议就医。"},
    ]
    predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    _run(
        installed / "medmerge",
        "score",
        "--predictions",
        predictions,
        "--out",
        tmp_path / "score",
        cwd=tmp_path,
    )
    results = json.loads((tmp_path / "score" / "results.json").read_text("utf-8"))
    raw = results["metrics"]["raw"]  # predictions equal to their references: full marks
    assert results["n"] == 2
    assert raw["bleu4"] == pytest.approx(100) and raw["sacrebleu"] == pytest.approx(100)
    assert raw["rougeL"] == pytest.approx(100, abs=1e-4)
