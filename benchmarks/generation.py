"""Benchmark: batched greedy generation (left padding) vs one prompt at a time.

The same HFBackend, batch size N vs 1, on the benchmark model of benchmarks/mcq.py (random
weights, project tokenizer), greedy, prompts = HEAD-QA dev questions in the qwen3 chat
template (thinking off), as `medmerge eval mcq --mode generate` asks them. Asserts identical
outputs (text, token count, stop flag) and prints items/s and the ratio.

    .venv/bin/python benchmarks/generation.py [--quick] [--batch-size 16] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mcq import HEADQA, bench_model  # benchmarks/ is on sys.path as the script's folder


def prompts_for(items, tokenizer) -> list[str]:
    from medmerge.data.templates import get_template
    from medmerge.eval.mcq import FORMATS, McqTask

    task = McqTask(FORMATS["en"], get_template("qwen3"), tokenizer, False)
    return [task.context(item, []) for item in items]


def timed_generate(backend, prompts, decoding, stops):
    started = time.perf_counter()
    outputs = backend.generate(prompts, decoding, stops)
    return time.perf_counter() - started, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 prompts, 1 repeat")
    parser.add_argument("--items", type=int, default=None, help="default 96 (32 with --quick)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    args = parser.parse_args()
    n_items = args.items or (32 if args.quick else 96)
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from medmerge.data.templates import get_template
    from medmerge.eval.backends.hf import HFBackend
    from medmerge.eval.config import ModelSpec
    from medmerge.eval.mcq_data import load_mcq

    model = bench_model(args.workdir)
    spec = ModelSpec(model=str(model))
    batched = HFBackend(spec, device="cpu", batch_size=args.batch_size)
    single = HFBackend(spec, device="cpu", batch_size=1)
    prompts = prompts_for(load_mcq([str(HEADQA)])[:n_items], batched.tokenizer)
    stops = get_template("qwen3").stop_token_ids(batched.tokenizer)
    decoding = {"do_sample": False, "max_new_tokens": args.max_new_tokens, "seed": 0}
    lengths = [len(batched.tokenizer(p)["input_ids"]) for p in prompts]
    print(
        f"{len(prompts)} prompts ({min(lengths)}-{max(lengths)} tokens), greedy, "
        f"max_new_tokens {args.max_new_tokens}, batch size {args.batch_size} vs 1, "
        f"torch threads {torch.get_num_threads()}, model {model.name}"
    )
    timed_generate(batched, prompts[:2], decoding, stops)  # warm-up
    fast, slow = [], []
    for repeat in range(repeats):  # interleaved, so both see the same machine load
        seconds, ours = timed_generate(batched, prompts, decoding, stops)
        fast.append(seconds)
        seconds, theirs = timed_generate(single, prompts, decoding, stops)
        slow.append(seconds)
        print(f"  repeat {repeat + 1}: batched {fast[-1]:.1f} s, one-by-one {slow[-1]:.1f} s")
    fast_s, slow_s = statistics.median(fast), statistics.median(slow)
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    tokens = sum(g.tokens for g in ours)
    n = len(prompts)
    print()
    print("| mode                | seconds | items/s | new tokens/s |")
    print("|---------------------|--------:|--------:|-------------:|")
    print(
        f"| batched ({args.batch_size:>2})        | {fast_s:7.1f} | {n / fast_s:7.2f} "
        f"| {tokens / fast_s:12.1f} |"
    )
    print(f"| one by one          | {slow_s:7.1f} | {n / slow_s:7.2f} | {tokens / slow_s:12.1f} |")
    print()
    print(f"items/s batched / one-by-one: {slow_s / fast_s:.2f}  (goal >= 3)")
    print(f"identical outputs: {same}/{n} ({tokens} new tokens in all)")
    assert same == n, "batched and one-by-one greedy outputs differ"


if __name__ == "__main__":
    main()
