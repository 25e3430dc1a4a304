"""Benchmark: medmerge's multiple-choice log-likelihood scoring vs lm-evaluation-harness.

Both score the same HEAD-QA dev items (data/mcq_en/dev_HEAD_EN.json) on the same model, a
random-weight Qwen3 with the project tokenizer, with the same context and continuation
strings: lm-eval reads a local task YAML over a JSON lines file holding medmerge's recorded
`context` and its continuations (without the leading space, which is lm-eval's default
target_delimiter). Asserts identical per-item predictions, prints items/s and the ratio.

    .venv/bin/python benchmarks/mcq.py [--quick] [--continuation text|letter] [--workdir DIR]

Needs lm-eval (pip install lm-eval; measured with 0.4.13).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
HEADQA = REPO / "data" / "mcq_en" / "dev_HEAD_EN.json"
MODEL = {"hidden_size": 256, "intermediate_size": 768, "num_layers": 4, "head_dim": 64}


def bench_model(workdir: Path) -> Path:
    """The benchmark model: medmerge's base build (project tokenizer), random weights, reused."""
    from medmerge.base import BaseBuildConfig, build_base

    out = workdir / "model-h{hidden_size}-l{num_layers}".format(**MODEL)
    if not (out / "config.json").exists():
        build_base(BaseBuildConfig(out=str(out), pretrain_steps=0, force=True, **MODEL))
    return out


def medmerge_run(model: Path, items, continuation: str, batch_size: int):
    """(seconds, records) for `score_loglik` over the items, zero-shot, plain-text prompts."""
    from medmerge.eval.backends.hf import HFBackend
    from medmerge.eval.config import ModelSpec
    from medmerge.eval.mcq import FORMATS, McqTask, score_loglik

    backend = HFBackend(ModelSpec(model=str(model)), device="cpu", batch_size=batch_size)
    task = McqTask(FORMATS["en"], None, backend.tokenizer, False, continuation)
    started = time.perf_counter()
    records = score_loglik(task, items, [[] for _ in items], backend)
    return time.perf_counter() - started, records


def write_lm_eval_task(folder: Path, records) -> str:
    """A local lm-eval task over medmerge's recorded contexts and continuations."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as handle:
        for r in records:
            choices = [c.removeprefix(" ") for c in r["continuations"]]
            row = {"context": r["context"], "choices": choices, "gold": r["answer_index"]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    name = "medmerge_bench_headqa"
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {docs}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n",
        encoding="utf-8",
    )
    return name


def lm_eval_run(model: Path, task_dir: Path, task: str, batch_size: int):
    """(seconds end to end, seconds inside loglikelihood, per-doc samples) for lm-eval."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model), device="cpu", batch_size=batch_size, dtype="float32")
    scoring = [0.0]
    inner = lm.loglikelihood

    def timed(requests, *args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(requests, *args, **kwargs)
        finally:
            scoring[0] += time.perf_counter() - started

    lm.loglikelihood = timed
    manager = TaskManager(include_path=str(task_dir))
    started = time.perf_counter()
    results = simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, log_samples=True, verbosity="ERROR"
    )
    seconds = time.perf_counter() - started
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return seconds, scoring[0], samples


def compare(records, samples) -> tuple[int, float, int]:
    """(items with equal predictions, largest |loglik difference|, request strings that differ)."""
    same, worst, strings = 0, 0.0, 0
    for record, sample in zip(records, samples, strict=True):
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]
        predicted = max(range(len(theirs)), key=theirs.__getitem__)
        same += predicted == record["predicted_index"]
        worst = max(
            worst, *(abs(a - b) for a, b in zip(theirs, record["loglikelihoods"], strict=True))
        )
        asked = [tuple(a["arguments"]) for a in _arguments(sample)]
        strings += asked != [(record["context"], c) for c in record["continuations"]]
    return same, worst, strings


def _arguments(sample):
    args = sample["arguments"]
    if isinstance(args, dict):  # lm-eval 0.4.x: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}}
        return [{"arguments": (a["arg_0"], a["arg_1"])} for a in args.values()]
    return [{"arguments": tuple(a)} for a in args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="120 items, 1 repeat")
    parser.add_argument("--items", type=int, default=None, help="default 400 (120 with --quick)")
    parser.add_argument("--continuation", choices=["text", "letter"], default="text")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    args = parser.parse_args()
    n_items = args.items or (120 if args.quick else 400)
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from medmerge.eval.mcq_data import load_mcq

    model = bench_model(args.workdir)
    items = load_mcq([str(HEADQA)])[:n_items]
    print(
        f"{len(items)} HEAD-QA items x {len(items[0].options)} options, continuation "
        f"{args.continuation!r}, batch size {args.batch_size}, torch threads "
        f"{torch.get_num_threads()}, model {model.name}"
    )
    ours, theirs, scoring = [], [], []
    for repeat in range(repeats):  # interleaved, so both see the same machine load
        seconds, records = medmerge_run(model, items, args.continuation, args.batch_size)
        ours.append(seconds)
        task = write_lm_eval_task(args.workdir / "lm_eval_task", records)
        total, inner, samples = lm_eval_run(
            model, args.workdir / "lm_eval_task", task, args.batch_size
        )
        theirs.append(total)
        scoring.append(inner)
        print(
            f"  repeat {repeat + 1}: medmerge {seconds:.1f} s, lm-eval {total:.1f} s "
            f"(of which loglikelihood {inner:.1f} s)"
        )
    same, worst, strings = compare(records, samples)
    n = len(items)
    ours_s, theirs_s, inner_s = map(statistics.median, (ours, theirs, scoring))
    print()
    print("| tool                          | seconds | items/s |")
    print("|-------------------------------|--------:|--------:|")
    print(f"| medmerge loglik               | {ours_s:7.1f} | {n / ours_s:7.2f} |")
    print(f"| lm-eval (simple_evaluate)     | {theirs_s:7.1f} | {n / theirs_s:7.2f} |")
    print(f"| lm-eval (loglikelihood only)  | {inner_s:7.1f} | {n / inner_s:7.2f} |")
    print()
    print(f"items/s medmerge / lm-eval end to end:       {theirs_s / ours_s:.2f}  (goal >= 2)")
    print(f"items/s medmerge / lm-eval loglikelihood:    {inner_s / ours_s:.2f}")
    print(
        f"identical predictions: {same}/{n}; request strings differing: {strings}; "
        f"max |loglik difference| {worst:.2e}"
    )
    assert strings == 0, "lm-eval was asked other strings than medmerge"
    assert same == n, "per-item predictions differ"


if __name__ == "__main__":
    main()
