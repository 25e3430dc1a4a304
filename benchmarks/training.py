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

    .venv/bin/python benchmarks/training.py [--quick] [--threads 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 examples, 1 repeat")
    parser.add_argument("--examples", type=int, default=None, help="default 200 (64 --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--data", choices=sorted(SFT_DATA), default="zh")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    args = parser.parse_args()
    n_examples = args.examples or (64 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = bench_model(args.workdir)
    data = SFT_DATA[args.data]
    bare_run(train_config(model, data, args.workdir / "sft-bare", 8, False))  # warm-up
    runs = {
        "medmerge, unpacked": lambda: medmerge_run(
            train_config(model, data, args.workdir / "sft-unpacked", n_examples, False)
        ),
        "medmerge, packed": lambda: medmerge_run(
            train_config(model, data, args.workdir / "sft-packed", n_examples, True)
        ),
        "bare loop, unpacked": lambda: bare_run(
            train_config(model, data, args.workdir / "sft-bare", n_examples, False)
        ),
    }
    print(
        f"SFT on {n_examples} examples of {data.name}, cutoff 512, batch 4, LoRA r=8 all-linear, "
        f"torch threads {torch.get_num_threads()}, model {model.name}"
    )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    facts: dict[str, tuple[int, int, float]] = {}
    for repeat in range(repeats):  # interleaved, so every contender sees the same load
        for name, run in runs.items():
            took, tokens, steps, loss = run()
            seconds[name].append(took)
            facts[name] = (tokens, steps, loss)
        print(
            f"  repeat {repeat + 1}: " + ", ".join(f"{n} {s[-1]:.1f} s" for n, s in seconds.items())
        )
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print()
    print("| run                  | steps | tokens | loop seconds | tokens/s | last loss |")
    print("|----------------------|------:|-------:|-------------:|---------:|----------:|")
    for name, (tokens, steps, loss) in facts.items():
        print(
            f"| {name:<20} | {steps:5d} | {tokens:6d} | {median[name]:12.1f} "
            f"| {tokens / median[name]:8.1f} | {loss:9.4f} |"
        )
    packed = facts["medmerge, packed"][0] / median["medmerge, packed"]
    unpacked = facts["medmerge, unpacked"][0] / median["medmerge, unpacked"]
    overhead = median["medmerge, unpacked"] / median["bare loop, unpacked"]
    print()
    print(f"tokens/s packed / unpacked:           {packed / unpacked:.2f}")
    print(f"loop time medmerge / bare (overhead): {overhead:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
