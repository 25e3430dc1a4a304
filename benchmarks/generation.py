"""Benchmark: medmerge's batched greedy generation vs a plain batched `model.generate`.

Contenders, each in a fresh process (rounds.py: wall time counts the interpreter start and
imports; "generation" is the time inside the generation calls):
- medmerge: HFBackend.generate at batch N (prompts longest first, a row leaves the batch at
  its first stop token and the next prompt takes its place);
- hf-generate: what a user writes with transformers: the prompts in their order, N at a
  time, left-padded, `model.generate(greedy, max_new_tokens, eos_token_id=stops)`;
- medmerge-1: HFBackend.generate at batch 1.
Model: the demo's merged checkpoint (runs/demo/merged, PT 0.3 + SFT 0.7, from `make demo`),
which ends its answers as the models users evaluate do, unless --model names a folder;
--random takes the benchmark model of benchmarks/mcq.py (random weights, project tokenizer:
it never emits a stop token, so every row runs to --max-new-tokens). Prompts: the demo's
MeQSum questions in the qwen3 chat template, thinking off, as `medmerge eval gen` renders
them (--prompts headqa: HEAD-QA questions as `medmerge eval mcq --mode generate` asks them).
Asserts identical outputs (text, token count, stop flag) across the three.

    make demo && .venv/bin/python benchmarks/generation.py [--quick] [--rounds 5] [--batch-size 16]
    .venv/bin/python benchmarks/generation.py --random              # no row ever stops
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

from mcq import HEADQA, REPO, bench_model  # benchmarks/ is on sys.path as the script's folder

CONTENDERS = ("medmerge", "hf-generate", "medmerge-1")
DEMO_MERGED = REPO / "runs" / "demo" / "merged"  # what `make demo` merges and evaluates
MEQSUM = REPO / "data" / "qa_en" / "meqsum_sample.jsonl"  # the demo's generation suite


def prompts_for(source: str, count: int, tokenizer) -> list[str]:
    """The first `count` prompts of `source` in the qwen3 template, thinking off: MeQSum
    questions as `medmerge eval gen` renders them (the demo's generation suite), or HEAD-QA
    questions as `medmerge eval mcq --mode generate` asks them."""
    from medmerge.data.templates import get_template
    from medmerge.eval.generation import load_gen_items
    from medmerge.eval.mcq import FORMATS, McqTask
    from medmerge.eval.mcq_data import load_mcq

    template = get_template("qwen3")
    if source == "meqsum":
        columns = {"prompt": "question", "reference": "summary"}
        items = load_gen_items(str(MEQSUM), "columns", columns)[:count]
        return [template.render_prompt(tokenizer, item.messages, False) for item in items]
    task = McqTask(FORMATS["en"], template, tokenizer, False)
    return [task.context(item, []) for item in load_mcq([str(HEADQA)])[:count]]


def hf_generate(backend, prompts, max_new_tokens: int, stops, batch_size: int):
    """A plain batched model.generate over the prompts in their order."""
    from medmerge.eval.backends.base import decode_generation

    tokenizer, outputs = backend.tokenizer, []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        out = backend.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=backend.pad_id,
        )
        rows = out[:, enc["input_ids"].shape[1] :].tolist()
        outputs += [decode_generation(tokenizer, ids, stops) for ids in rows]
    return outputs


def run_contender(args) -> None:
    """In a fresh process: one contender's generations, written to --result as JSON."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from medmerge.data.templates import get_template
    from medmerge.eval.backends.hf import HFBackend
    from medmerge.eval.config import ModelSpec

    batch = 1 if args.contender == "medmerge-1" else args.batch_size
    backend = HFBackend(ModelSpec(model=str(args.model)), device="cpu", batch_size=batch)
    prompts = prompts_for(args.prompts, args.items, backend.tokenizer)
    stops = get_template("qwen3").stop_token_ids(backend.tokenizer)
    decoding = {"do_sample": False, "max_new_tokens": args.max_new_tokens, "seed": 0}
    started = time.perf_counter()
    if args.contender == "hf-generate":
        outputs = hf_generate(backend, prompts, args.max_new_tokens, stops, batch)
    else:
        outputs = backend.generate(prompts, decoding, stops)
    seconds = time.perf_counter() - started
    rows = [[g.text, g.tokens, g.stopped] for g in outputs]
    Path(args.result).write_text(json.dumps({"generation": seconds, "outputs": rows}))


def contender_command(args, name: str) -> list[str]:
    command = [sys.executable, __file__, "--contender", name, "--items", str(args.items)]
    command += ["--batch-size", str(args.batch_size), "--model", str(args.model)]
    command += ["--max-new-tokens", str(args.max_new_tokens), "--prompts", args.prompts]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 prompts")
    parser.add_argument("--items", type=int, default=None, help="default 96 (32 with --quick)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--prompts", choices=("meqsum", "headqa"), default="meqsum")
    parser.add_argument("--rounds", type=int, default=5, help="after one warm-up round")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--model", type=Path, default=None, help=f"a model folder (default: {DEMO_MERGED})"
    )
    parser.add_argument(
        "--random", action="store_true", help="mcq.py's random-weight model (never stops)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.items = args.items or (32 if args.quick else 96)
    return args


def main() -> None:
    args = parse_args()
    if args.contender:
        return run_contender(args)
    from rounds import load_summary, run_rounds, spread, spread_text

    if args.random:
        args.model = bench_model(args.workdir)
    args.model = args.model or DEMO_MERGED
    if not (args.model / "config.json").exists():
        sys.exit(f"{args.model}: no model folder; run `make demo` first, or pass --model DIR")
    print(
        f"{args.items} {args.prompts} prompts, greedy, max_new_tokens {args.max_new_tokens}, batch size "
        f"{args.batch_size} (medmerge-1: 1), torch threads {args.threads or 'default'}, "
        f"model {args.model.name}, {args.rounds} rounds"
    )
    rounds = run_rounds({n: contender_command(args, n) for n in CONTENDERS}, args.rounds)
    wall = {n: [r.wall for r in rounds.runs[n]] for n in CONTENDERS}
    inner = {n: [r.result["generation"] for r in rounds.runs[n]] for n in CONTENDERS}
    outputs = {n: rounds.runs[n][-1].result["outputs"] for n in CONTENDERS}
    tokens = sum(row[1] for row in outputs["medmerge"])
    print()
    print("| contender | wall s, fresh process | generation s | new tokens/s (generation) |")
    print("|---|---:|---:|---:|")
    for n in CONTENDERS:
        rate = tokens / spread(inner[n])[1]
        print(f"| {n} | {spread_text(wall[n])} | {spread_text(inner[n], 2)} | {rate:.1f} |")
    print(load_summary(rounds))
    median = {n: (spread(wall[n])[1], spread(inner[n])[1]) for n in CONTENDERS}
    for other in ("hf-generate", "medmerge-1"):
        print(
            f"speed medmerge / {other}: generation {median[other][1] / median['medmerge'][1]:.2f}, "
            f"wall {median[other][0] / median['medmerge'][0]:.2f}"
        )
    same = {
        n: sum(a == b for a, b in zip(outputs["medmerge"], outputs[n], strict=True))
        for n in CONTENDERS
    }
    stopped = sum(row[2] for row in outputs["medmerge"])
    print(
        f"identical outputs vs hf-generate {same['hf-generate']}/{args.items}, vs batch 1 "
        f"{same['medmerge-1']}/{args.items}; {stopped} rows ended on a stop token, {tokens} new tokens"
    )
    assert all(v == args.items for v in same.values()), "greedy outputs differ"


if __name__ == "__main__":
    main()
