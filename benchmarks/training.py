"""Benchmark: SFT tokens/s with packing vs without, and medmerge's loop vs a bare PyTorch loop.

Model: the benchmark model of benchmarks/mcq.py (random weights, project tokenizer) with
LoRA r=8 on all linear layers; data: the first N examples (`max_samples`) of the demo's SFT
data, MeQSum (data/qa_en/meqsum_train.jsonl, as configs/sft.yaml reads it; --data zh: the
Huatuo sample, short QA; --data en: GenMedGPT, longer replies), qwen3 template, thinking
off, configs/sft.yaml's batch 8 and cutoff 256 (--batch-size, --cutoff), AdamW, cosine
schedule, one epoch.

- packing: `medmerge.train.train` with packing on vs off on the same examples; tokens/s =
  real (non-padding) tokens of the epoch / seconds of the training loop (the manifest's
  train_seconds: model loading and adapter writing excluded).
- overhead: the same unpacked run vs a bare loop (forward, backward, clip, AdamW step,
  scheduler step, zero_grad) over the same model, LoRA init, batches in the same order,
  and the same number of steps; both timed over the loop only. Goal: ratio <= 1.10.
Each contender is a fresh process (rounds.py: wall time counts the interpreter start,
imports, loading and writing), in interleaved rounds after a warm-up round.

    .venv/bin/python benchmarks/training.py [--quick] [--rounds 5] [--threads 1]
    .venv/bin/python benchmarks/training.py --data zh --batch-size 4 --cutoff 512
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

SFT_DATA = {  # name -> a data entry of a training config
    # the demo's SFT data (configs/sft.yaml): question -> one-line summary, 49-417 tokens
    "meqsum": {
        "path": str(REPO / "data" / "qa_en" / "meqsum_train.jsonl"),
        "columns": {"instruction": "question", "output": "summary"},
    },
    "en": str(REPO / "data" / "sft_en" / "genmedgpt_sample.json"),  # replies ~200 tokens
    "zh": str(REPO / "data" / "sft_zh" / "huatuo_sample.jsonl"),  # short QA, ~90 tokens
}


def train_config(model: Path, data, out: Path, examples: int, packing: bool, shape=(8, 256)):
    """SFT as configs/sft.yaml trains it (LoRA r 8 all-linear, qwen3, thinking off); `shape`:
    (batch size, cutoff_len)."""
    from medmerge.train.config import TrainConfig

    batch_size, cutoff_len = shape
    return TrainConfig(
        stage="sft",
        base=str(model),
        data=[data],
        out=str(out),
        max_samples=examples,
        template="qwen3",
        enable_thinking=False,
        cutoff_len=cutoff_len,
        packing=packing,
        learning_rate=2e-3,
        num_epochs=1,
        batch_size=batch_size,
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
    shape = (args.batch_size, args.cutoff)
    cfg = train_config(model, SFT_DATA[args.data], out, args.examples, packing, shape)
    seconds, tokens, steps, loss = (medmerge_run if loop == "medmerge" else bare_run)(cfg)
    result = {"seconds": seconds, "tokens": tokens, "steps": steps, "loss": loss}
    Path(args.result).write_text(json.dumps(result))


def contender_command(args, name: str) -> list[str]:
    command = [sys.executable, __file__, "--contender", name, "--examples", str(args.examples)]
    command += ["--data", args.data, "--workdir", str(args.workdir)]
    command += ["--batch-size", str(args.batch_size), "--cutoff", str(args.cutoff)]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 examples")
    parser.add_argument("--examples", type=int, default=None, help="default 200 (64 --quick)")
    parser.add_argument("--rounds", type=int, default=5, help="after one warm-up round")
    parser.add_argument("--data", choices=sorted(SFT_DATA), default="meqsum")
    parser.add_argument("--batch-size", type=int, default=8, help="configs/sft.yaml's 8")
    parser.add_argument("--cutoff", type=int, default=256, help="configs/sft.yaml's 256")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    parser.add_argument("--contender", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.examples = args.examples or (64 if args.quick else 200)
    return args


def layout_bound(args, model: Path) -> float:
    """The most packing can gain where all work is per position: the unpacked epoch's
    positions (each batch, in the loop's seeded order, padded to its longest example) over
    its real tokens, which packed steps run unpadded."""
    import torch

    from medmerge.train.dataset import load_tokenizer, load_training_data

    shape = (args.batch_size, args.cutoff)
    cfg = train_config(model, SFT_DATA[args.data], args.workdir, args.examples, False, shape)
    examples = load_training_data(cfg, load_tokenizer(cfg)).examples
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed))
    sizes = [len(examples[i]["input_ids"]) for i in order.tolist()]
    batches = [sizes[i : i + cfg.batch_size] for i in range(0, len(sizes), cfg.batch_size)]
    return sum(max(b) * len(b) for b in batches) / sum(sizes)


def main() -> None:
    args = parse_args()
    if args.contender:
        return run_contender(args)
    from rounds import load_summary, run_rounds, spread, spread_text

    model = bench_model(args.workdir)
    print(
        f"SFT on {args.examples} examples of {args.data}, cutoff {args.cutoff}, "
        f"batch {args.batch_size}, "
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
    print(
        f"tokens/s packed / unpacked:           {packed / unpacked:.2f}  (goal >= 1.3; "
        f"the layout bounds it at {layout_bound(args, model):.2f})"
    )
    print(f"loop time medmerge / bare (overhead): {overhead:.3f}  (goal <= 1.10)")


if __name__ == "__main__":
    main()
