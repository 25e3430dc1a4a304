"""Benchmark: an 11-point merge-weight sweep in memory vs export-then-evaluate per point.

Three contenders over the same weight points, suites, template and decoding, in one run:
  sweep     `medmerge sweep`: base loaded once, the merged delta applied and undone in memory;
  eval only the same evaluation calls on one loaded model with no weight switching at all
            (the evaluation work alone: the floor the sweep is measured against);
  export    per point, `medmerge merge` an fp32 checkpoint, then evaluate that folder (the
            study's way). Also the bytes each writes.
Goal: sweep <= 1.3 x eval only.

    .venv/bin/python benchmarks/sweep.py [--quick] [--workdir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
MODEL = {"hidden_size": 256, "intermediate_size": 768, "num_layers": 4, "head_dim": 64}


def build_inputs(workdir: Path) -> tuple[Path, Path, Path]:
    """A random-weight base with the project tokenizer and two briefly trained adapters."""
    from medmerge.base import BaseBuildConfig, build_base
    from medmerge.train import TrainConfig, train

    base = workdir / "base"
    if not (base / "config.json").exists():
        build_base(BaseBuildConfig(out=str(base), pretrain_steps=0, force=True, **MODEL))
    common = {
        "base": str(base),
        "cutoff_len": 64,
        "batch_size": 4,
        "max_steps": 3,
        "progress": False,
        "force": True,
    }
    adapters = []
    for stage, data in (
        ("pt", "data/pt/huatuo_zh_text.jsonl"),
        ("sft", "data/sft_en/genmedgpt_sample.json"),
    ):
        out = workdir / stage
        if not (out / "adapter_config.json").exists():
            # enable_thinking False: the sweep evaluates with it off, and checks that it matches.
            data_files = [str(REPO / data)]
            cfg = TrainConfig(stage=stage, data=data_files, out=str(out), max_samples=32, **common)
            train(cfg.model_copy(update={"enable_thinking": False}))
        adapters.append(out)
    return base, adapters[0], adapters[1]


def sweep_yaml(workdir: Path, base: Path, pt: Path, sft: Path, quick: bool) -> Path:
    points = [0.0, 0.5, 1.0] if quick else [round(0.1 * i, 1) for i in range(11)]
    config = {
        "base": str(base),
        "adapters": [{"path": str(pt), "label": "pt"}, {"path": str(sft), "label": "sft"}],
        "grid": {"pt": points, "sft": "complement"},
        "templates": [{"template": "qwen3", "enable_thinking": False}],
        "decodings": {"greedy": {"preset": "A", "max_new_tokens": 16 if quick else 32}},
        "suites": {
            "gen": [
                {
                    "name": "meqsum",
                    "data": str(REPO / "data/qa_en/meqsum_sample.jsonl"),
                    "format": "columns",
                    "offset": 200,
                    "limit": 8 if quick else 16,
                    "columns": {"prompt": "question", "reference": "summary"},
                }
            ],
            "mcq": [
                {
                    "name": "headqa",
                    "data": [str(REPO / "data/mcq_en/dev_HEAD_EN.json")],
                    "include_ids": ["Cuaderno_2015_1_M"],
                    "limit": 16 if quick else 32,
                }
            ],
        },
        "recommend": {"objective": "avg_accuracy", "reference": {"pt": 0.0, "sft": 1.0}},
        "device": "cpu",
        "dtype": "fp32",
        "batch_size": 16,
        "progress": False,
    }
    path = workdir / "sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_sweep_once(config: Path, out: Path) -> float:
    from medmerge.sweep import run_sweep
    from medmerge.sweep.config import build_sweep_config

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    run_sweep(build_sweep_config(config, {"out": str(out)}))
    return time.perf_counter() - started


def run_eval_only(config: Path) -> float:
    """The sweep's evaluation calls, one loaded model, no weights switched: the work alone."""
    from medmerge.eval.backends import load_backend
    from medmerge.eval.config import ModelSpec
    from medmerge.sweep.config import build_sweep_config
    from medmerge.sweep.evaluate import evaluate_gen, evaluate_mcq, load_gen_suite, load_mcq_suite

    cfg = build_sweep_config(config, {"out": "unused"})
    started = time.perf_counter()
    backend = load_backend(ModelSpec(model=cfg.base), cfg)
    gens = [load_gen_suite(s) for s in cfg.suites.gen]
    mcqs = [load_mcq_suite(s) for s in cfg.suites.mcq]
    choice, decoding = cfg.templates[0], next(iter(cfg.decodings.values()))
    for _ in cfg.weight_points():
        for loaded in gens:
            evaluate_gen(backend, loaded, choice, decoding)
        for loaded in mcqs:
            evaluate_mcq(backend, loaded, choice)
    return time.perf_counter() - started


def run_export_then_eval(config: Path, workdir: Path) -> tuple[float, int]:
    from medmerge.merge import MergeConfig, run_merge
    from medmerge.sweep.config import build_sweep_config
    from medmerge.sweep.run import evaluate_checkpoint

    cfg = build_sweep_config(config, {"out": "unused"})
    written = 0
    started = time.perf_counter()
    for weights in cfg.weight_points():
        out = workdir / "export"
        adapters = [
            {"path": a.path, "weight": w} for a, w in zip(cfg.adapters, weights, strict=True)
        ]
        run_merge(
            MergeConfig(base=cfg.base, adapters=adapters, out=str(out), dtype="fp32", force=True)
        )
        evaluate_checkpoint(str(out), cfg)
        written += folder_bytes(out)
    return time.perf_counter() - started, written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 weight points, fewer items")
    parser.add_argument("--workdir", default="/tmp/medmerge-bench-sweep")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base, pt, sft = build_inputs(workdir)
    config = sweep_yaml(workdir, base, pt, sft, args.quick)
    sweep_s = run_sweep_once(config, workdir / "sweep")
    sweep_bytes = folder_bytes(workdir / "sweep")
    eval_s = run_eval_only(config)
    export_s, export_bytes = run_export_then_eval(config, workdir)
    points = len(yaml.safe_load(config.read_text())["grid"]["pt"])
    print(f"\n{points} weight points, torch threads {torch.get_num_threads()}")
    print("| contender | seconds | bytes written |\n|---|---:|---:|")
    print(f"| eval only (no weight switching) | {eval_s:.1f} | 0 |")
    print(f"| medmerge sweep (in memory) | {sweep_s:.1f} | {sweep_bytes:,} |")
    print(f"| export fp32 checkpoint + evaluate, per point | {export_s:.1f} | {export_bytes:,} |")
    print(f"\nsweep / eval only = {sweep_s / eval_s:.2f} (goal <= 1.3)")
    print(
        f"export-then-evaluate / sweep = {export_s / sweep_s:.2f}; bytes {export_bytes / max(1, sweep_bytes):.0f}x"
    )


if __name__ == "__main__":
    main()
