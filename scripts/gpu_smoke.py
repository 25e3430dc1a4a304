"""GPU smoke run: a 0.8 B synthetic base, PT and SFT in bf16, merge, verify, evaluate.

On a CUDA machine with no network:   scripts/gpu_smoke.sh [--out DIR]
Anywhere, at toy size on the CPU:    scripts/gpu_smoke.sh --dry-run [--out DIR]

Every stage runs through the real `medmerge` CLI with the shipped configs plus overrides, and
the script ends with a throughput table. Budget: <= 8 minutes on one H100/H200-class GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MEDMERGE = str(Path(sys.executable).with_name("medmerge"))

# ~0.81 B parameters: 24 blocks of hidden 1536 / MLP 6144, GQA 12:2, the project's 8k vocab.
GPU_BASE = {
    "hidden_size": 1536,
    "intermediate_size": 6144,
    "num_layers": 24,
    "num_heads": 12,
    "num_kv_heads": 2,
    "head_dim": 128,
    "pretrain_steps": 0,
    "save_dtype": "bf16",
}
TOY_BASE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "head_dim": 8,
    "vocab_size": 1024,
    "pretrain_steps": 0,
}


def _sets(values: dict[str, object]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def run(name: str, argv: list[str], timings: dict[str, float]) -> None:
    print(f"[{name}] medmerge {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run([MEDMERGE, *argv], cwd=REPO, check=False)
    timings[name] = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"gpu_smoke: stage {name} failed with exit status {result.returncode}")


TEMPLATE = ["--template", "qwen3", "--no-enable-thinking"]  # as the SFT config trains


def gen_eval_args(
    out: Path, name: str, items: int, max_new_tokens: str, adapters: list[str] | None = None
) -> list[str]:
    """`eval gen` on MeQSum, greedy, into out/name: of the merged checkpoint, or of the base
    with `adapters` (["--adapter", "PATH=W", ...]) applied without a merged checkpoint."""
    model = (
        ["--base", str(out / "base"), *adapters] if adapters else ["--model", str(out / "merged")]
    )
    args = ["eval", "gen", *model, "--data", "data/qa_en/meqsum_sample.jsonl"]
    args += ["--limit", str(items), "--preset", "A", "--max-new-tokens", max_new_tokens]
    return [*args, *TEMPLATE, "--out", str(out / name)]


def train_args(stage: str, out: Path, dry_run: bool) -> list[str]:
    overrides = {
        "max_steps": 4 if dry_run else 30,
        "cutoff_len": 64 if dry_run else 512,
        "batch_size": 4 if dry_run else 16,
        "val_size": 0,
        "save_steps": 1000,
        "precision": "fp32" if dry_run else "bf16",
        "progress": "false",
    }
    return [
        "train",
        stage,
        "--config",
        f"configs/{stage}.yaml",
        "--base",
        str(out / "base"),
        "--out",
        str(out / stage),
        "--force",
        *_sets(overrides),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="toy sizes on the CPU: checks the chain only"
    )
    parser.add_argument("--out", default="runs/gpu_smoke")
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("gpu_smoke: no CUDA device found; use --dry-run to check the chain on the CPU")
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    timings: dict[str, float] = {}
    base = TOY_BASE if args.dry_run else GPU_BASE
    run(
        "base",
        [
            "base",
            "build",
            "--config",
            "configs/base.yaml",
            "--out",
            str(out / "base"),
            *_sets(base),
        ],
        timings,
    )
    run("pt", train_args("pt", out, args.dry_run), timings)
    run("sft", train_args("sft", out, args.dry_run), timings)
    adapters = ["--adapter", f"{out / 'pt'}=0.3", "--adapter", f"{out / 'sft'}=0.7"]
    dtype = "fp32" if args.dry_run else "bf16"
    run(
        "merge",
        [
            "merge",
            "--base",
            str(out / "base"),
            *adapters,
            "--out",
            str(out / "merged"),
            "--dtype",
            dtype,
        ],
        timings,
    )
    run(
        "verify",
        [
            "verify",
            "--base",
            str(out / "base"),
            "--merged",
            str(out / "merged"),
            *TEMPLATE,
        ],
        timings,
    )
    items = 8 if args.dry_run else 64
    max_new = "16" if args.dry_run else "128"
    run("eval_gen", gen_eval_args(out, "eval_gen", items, max_new), timings)
    mcq = ["eval", "mcq", "--model", str(out / "merged"), "--data", "data/mcq_en/dev_HEAD_EN.json"]
    mcq += ["--limit", str(4 * items), *TEMPLATE, "--out", str(out / "eval_mcq")]
    run("eval_mcq", mcq, timings)
    if not args.dry_run and _vllm_present():
        vllm_args = gen_eval_args(out, "eval_gen_vllm", items, max_new)
        run("eval_gen_vllm", [*vllm_args, "--backend", "vllm"], timings)
        # base + the exact merged adapter through vLLM's LoRA support: no checkpoint needed
        lora_args = gen_eval_args(out, "eval_gen_vllm_lora", items, max_new, adapters)
        run("eval_gen_vllm_lora", [*lora_args, "--backend", "vllm"], timings)
    report(out, timings, items)


def _vllm_present() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def report(out: Path, timings: dict[str, float], items: int) -> None:
    manifest = {
        s: json.loads((out / s / "medmerge_manifest.json").read_text())
        for s in ("base", "pt", "sft")
    }
    print(f"\nbase: {manifest['base']['parameters'] / 1e6:.1f} M parameters")
    for stage in ("pt", "sft"):
        log = [
            json.loads(line) for line in (out / stage / "loss_log.jsonl").read_text().splitlines()
        ]
        rates = [r["tokens_per_s"] for r in log if "tokens_per_s" in r]
        print(
            f"{stage}: {manifest[stage]['steps']} steps, {rates[-1]:.0f} tokens/s, loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}"
        )
    verdict = json.loads((out / "merged" / "verify.json").read_text())
    print(
        f"verify: ok={verdict['ok']} tensors={verdict['tensors_checked']} max_ulp={verdict['max_ulp_error']}"
    )
    print("\n| stage | seconds | throughput |\n|---|---:|---|")
    for name, seconds in timings.items():
        rate = f"{items / seconds:.1f} items/s" if name.startswith("eval_gen") else ""
        rate = f"{4 * items / seconds:.1f} items/s" if name == "eval_mcq" else rate
        print(f"| {name} | {seconds:.1f} | {rate} |")
    print(f"| total | {sum(timings.values()):.1f} | |")


if __name__ == "__main__":
    main()
