"""Benchmark: SFT tokens/s with packing vs without, and medmerge's loop vs a bare PyTorch loop.

Model: the benchmark model of benchmarks/mcq.py (random weights, project tokenizer) with
LoRA r=8 on all linear layers; data: the first N examples (`max_samples`) of the bundled
Huatuo sample (data/sft_zh, short QA; --data en: GenMedGPT, longer replies), qwen3
template, cutoff 512, batch 4, AdamW, cosine schedule, one epoch.

- packing: `medmerge.train.train` with packing on vs off on the same examples; tokens/s =
  real (non-padding) tokens of the epoch / seconds of the training loop (the manifest's
  train_seconds: model loading and adapter writing excluded).
- overhead: the same unpacked run vs a bare loop (forward, backward, clip, AdamW step,
  scheduler step, zero_grad) over the same model, LoRA init, batches in the same order,
  and the same number of steps; both timed over the loop only. Goal: ratio <= 1.10.
Each contender is a fresh process (rounds.py: wall time counts the interpreter start,
imports, loading and writing), in interleaved rounds after a warm-up round.

    .venv/bin/python benchmarks/training.py [--quick] [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mcq import REPO, bench_model  # benchmarks/ is on sys.path as the script's folder

SFT_DATA = {
    "en": REPO / "data" / "sft_en" / "genmedgpt_sample.json",  # replies ~200 tokens
    "zh": REPO / "data" / "sft_zh" / "huatuo_sample.jsonl",  # short QA, ~90 tokens
}


def train_config(model: Path, data: Path, out: Path, examples: int, packing: bool):
    from medmerge.train.config import TrainConfig

    return TrainConfig(
        stage="sft",
        base=str(model),
        data=[str(data)],
        out=str(out),
        max_samples=examples,
        template="qwen3",
        enable_thinking=False,
        cutoff_len=512,
        packing=packing,
        learning_rate=2e-3,
        num_epochs=1,
        batch_size=4,
        force=True,
    )


def medmerge_run(cfg) -> tuple[float, int, int, float]:
    """(loop seconds, tokens, steps, last loss) of `medmerge.train.train`."""
    from medmerge.manifest import read_manifest
    from medmerge.train.loop import train

    result = train(cfg)
    manifest = read_manifest(cfg.out)
    return manifest["train_seconds"], manifest["tokens_per_epoch"], result.steps, result.last_loss


def bare_run(cfg) -> tuple[float, int, int, float]:
    """The same epoch as a plain PyTorch loop over medmerge's model and batches."""
    import torch
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    from medmerge.train.dataset import load_tokenizer, load_training_data
    from medmerge.train.loop import load_lora_model

    data = load_training_data(cfg, load_tokenizer(cfg))
    set_seed(cfg.seed)
    model = load_lora_model(cfg, torch.float32)
    order = torch.randperm(len(data.examples), generator=torch.Generator().manual_seed(cfg.seed))
    examples = [data.examples[i] for i in order.tolist()]
    steps = -(-len(examples) // cfg.batch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, 0, steps)
    model.train()
    started = time.perf_counter()
    for start in range(0, len(examples), cfg.batch_size):
        batch = data.collate(examples[start : start + cfg.batch_size])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return seconds, data.tokens, steps, loss.item()


CONTENDERS = {  # name -> (packing, loop)
    "medmerge, unpacked": (False, "medmerge"),
    "medmerge, packed": (True, "medmerge"),
    "bare loop, unpacked": (False, "bare"),
}


def run_contender(args) -> None:
    """In a fresh process: one training run, its figures written to --result as JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    packing, loop = CONTENDERS[args.contender]
    out = args.workdir / ("sft-" + args.contender.replace(", ", "-").replace(" ", "-"))
    model = args.workdir / "model-h256-l4"
    cfg = train_config(model, SFT_DATA[args.data], out, args.examples, packing)
    seconds, tokens, steps, loss = (medmerge_run if loop == "medmerge" else bare_run)(cfg)
    result = {"seconds": seconds, "tokens": tokens, "steps": steps, "loss": loss}
    Path(args.result).write_text(json.dumps(result))


def contender_command(args, name: str) -> list[str]:
    command = [sys.executable, __file__, "--contender", name, "--examples", str(args.examples)]
    command += ["--data", args.data, "--workdir", str(args.workdir)]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 examples")
    parser.add_argument("--examples", type=int, default=None, help="default 200 (64 --quick)")
    parser.add_argument("--rounds", type=int, default=5, help="after one warm-up round")
    parser.add_argument("--data", choices=sorted(SFT_DATA), default="zh")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    parser.add_argument("--contender", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.examples = args.examples or (64 if args.quick else 200)
    return args


def main() -> None:
    args = parse_args()
    if args.contender:
        return run_contender(args)
    from rounds import load_summary, run_rounds, spread, spread_text

    model = bench_model(args.workdir)
    print(
        f"SFT on {args.examples} examples of {SFT_DATA[args.data].name}, cutoff 512, batch 4, "
        f"LoRA r=8 all-linear, torch threads {args.threads or 'default'}, model {model.name}, "
        f"{args.rounds} rounds"
    )
    rounds = run_rounds({n: contender_command(args, n) for n in CONTENDERS}, args.rounds)
    loop = {n: [r.result["seconds"] for r in rounds.runs[n]] for n in CONTENDERS}
    wall = {n: [r.wall for r in rounds.runs[n]] for n in CONTENDERS}
    last = {n: rounds.runs[n][-1].result for n in CONTENDERS}
    print()
    print("| run | steps | tokens | wall s, fresh process | loop s | tokens/s (loop) | last loss |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for n in CONTENDERS:
        rate = last[n]["tokens"] / spread(loop[n])[1]
        print(
            f"| {n} | {last[n]['steps']} | {last[n]['tokens']} | {spread_text(wall[n])} "
            f"| {spread_text(loop[n], 2)} | {rate:.1f} | {last[n]['loss']:.4f} |"
        )
    print(load_summary(rounds))
    median = {n: spread(loop[n])[1] for n in CONTENDERS}
    packed = last["medmerge, packed"]["tokens"] / median["medmerge, packed"]
    unpacked = last["medmerge, unpacked"]["tokens"] / median["medmerge, unpacked"]
    overhead = median["medmerge, unpacked"] / median["bare loop, unpacked"]
    print(f"tokens/s packed / unpacked:           {packed / unpacked:.2f}  (goal >= 1.3)")
    print(f"loop time medmerge / bare (overhead): {overhead:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
