"""Benchmark: medmerge's multiple-choice log-likelihood scoring vs its floor and lm-eval.

All score the same HEAD-QA dev items (data/mcq_en/dev_HEAD_EN.json) on the same model, a
random-weight Qwen3 with the project tokenizer, with the same context and continuation
strings: lm-eval reads a local task YAML over a JSON lines file holding medmerge's recorded
`context` and its continuations (without the leading space, which is lm-eval's default
target_delimiter). The floor is one forward over each token that must run: every context
once with last-position logits, every option's tokens once with their logits, no padding
(the tokens cut into equal rows), no tokenization. Each contender is a fresh process
(rounds.py): wall time counts the interpreter start and imports; "scoring" is the time
inside the scoring call. Asserts identical per-item predictions with lm-eval.

    .venv/bin/python benchmarks/mcq.py [--quick] [--rounds 5] [--continuation text|letter]

Needs lm-eval in its own venv (--lm-eval-python, default /work/venvs/lm-eval/bin/python;
measured with 0.4.13; `pip install torch==2.13.0 "lm-eval[hf]==0.4.13"`, as plain lm-eval
brings no transformers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
HEADQA = REPO / "data" / "mcq_en" / "dev_HEAD_EN.json"
MODEL = {"hidden_size": 256, "intermediate_size": 768, "num_layers": 4, "head_dim": 64}
LM_EVAL_PYTHON = Path("/work/venvs/lm-eval/bin/python")
TASK = "medmerge_bench_headqa"


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


def floor_run(model: Path, items, continuation: str, batch_size: int) -> float:
    """Seconds of the work that must run: each context and each option's input tokens once,
    in as many forwards as medmerge makes (`batch_size` questions' tokens per forward, cut
    into equal rows: no padding, no mask), the output layer and log-softmax only at as many
    positions as are scored (a context's last, and every option token's)."""
    import torch
    from transformers import AutoModelForCausalLM

    from medmerge.eval.backends.base import LoglikRequest, continuation_splits
    from medmerge.eval.backends.packed_scoring import group_by_prefix
    from medmerge.eval.mcq import FORMATS, McqTask
    from medmerge.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    task = McqTask(FORMATS["en"], None, tokenizer, False, continuation)
    requests = [
        LoglikRequest(task.context(item, []), option)
        for item in items
        for option in task.continuations(item)
    ]
    groups = group_by_prefix(
        continuation_splits(tokenizer, requests), [r.context for r in requests]
    )
    options = [[g.suffix(k) for k in range(len(g.indices))] for g in groups]
    pieces = [piece for g, o in zip(groups, options, strict=True) for piece in (g.prefix, *o)]
    rows = equal_rows(pieces, len(groups))
    scored_per_row = (len(groups) + sum(len(s) for o in options for s in o)) // len(groups)
    started = time.perf_counter()
    with torch.no_grad():
        for batch in rows.split(batch_size):
            hidden = lm.model(input_ids=batch).last_hidden_state
            scored = hidden.reshape(-1, hidden.shape[-1])[: len(batch) * scored_per_row]
            torch.log_softmax(lm.lm_head(scored).float(), -1)
    return time.perf_counter() - started


def equal_rows(sequences, n_rows: int):
    """All tokens of `sequences` once, cut into `n_rows` rows of equal length."""
    import torch

    stream = torch.tensor([t for s in sequences for t in s], dtype=torch.long)
    width = len(stream) // n_rows
    return stream[: width * n_rows].reshape(n_rows, width)


def write_lm_eval_task(folder: Path, records) -> str:
    """A local lm-eval task over medmerge's recorded contexts and continuations."""
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as handle:
        for r in records:
            choices = [c.removeprefix(" ") for c in r["continuations"]]
            row = {"context": r["context"], "choices": choices, "gold": r["answer_index"]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    name = TASK
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
    """(seconds end to end, seconds inside loglikelihood, per-doc results) for lm-eval."""
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
    docs = [
        {
            "loglikelihoods": [float(resp[0]) for resp in s["filtered_resps"]],
            "arguments": [list(a) for a in _arguments(s)],
        }
        for s in samples
    ]
    return seconds, scoring[0], docs


def _arguments(sample) -> list[tuple[str, str]]:
    args = sample["arguments"]
    if isinstance(args, dict):  # lm-eval 0.4.x: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}}
        return [(a["arg_0"], a["arg_1"]) for a in args.values()]
    return [tuple(a) for a in args]


def compare(records, docs) -> tuple[int, float, int]:
    """(items with equal predictions, largest |loglik difference|, request strings that differ)."""
    same, worst, strings = 0, 0.0, 0
    for record, doc in zip(records, docs, strict=True):
        theirs = doc["loglikelihoods"]
        predicted = max(range(len(theirs)), key=theirs.__getitem__)
        same += predicted == record["predicted_index"]
        worst = max(
            worst, *(abs(a - b) for a, b in zip(theirs, record["loglikelihoods"], strict=True))
        )
        asked = [tuple(a) for a in doc["arguments"]]
        strings += asked != [(record["context"], c) for c in record["continuations"]]
    return same, worst, strings


def run_contender(args) -> None:
    """In a fresh process: one contender's run, its figures written to --result as JSON."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = args.workdir / "model-h{hidden_size}-l{num_layers}".format(**MODEL)
    if args.contender == "lm-eval":
        task_dir = args.workdir / "lm_eval_task"
        total, inner, docs = lm_eval_run(model, task_dir, TASK, args.batch_size)
        result = {"seconds": total, "scoring": inner, "docs": docs}
    else:
        from medmerge.eval.mcq_data import load_mcq

        items = load_mcq([str(HEADQA)])[: args.items]
        if args.contender == "floor":
            result = {"scoring": floor_run(model, items, args.continuation, args.batch_size)}
        else:
            seconds, records = medmerge_run(model, items, args.continuation, args.batch_size)
            result = {"scoring": seconds, "records": records}
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


def contender_command(args, name: str) -> list[str]:
    python = str(args.lm_eval_python) if name == "lm-eval" else sys.executable
    command = [python, __file__, "--contender", name, "--items", str(args.items)]
    command += ["--continuation", args.continuation, "--batch-size", str(args.batch_size)]
    command += ["--workdir", str(args.workdir)]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="120 items")
    parser.add_argument("--items", type=int, default=None, help="default 400 (120 with --quick)")
    parser.add_argument("--continuation", choices=["text", "letter"], default="text")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="after one warm-up round")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medmerge-bench"))
    parser.add_argument("--lm-eval-python", type=Path, default=LM_EVAL_PYTHON)
    parser.add_argument(
        "--contender", choices=["medmerge", "floor", "lm-eval"], help=argparse.SUPPRESS
    )
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.items = args.items or (120 if args.quick else 400)
    return args


def main() -> None:
    args = parse_args()
    if args.contender:
        return run_contender(args)
    from rounds import load_summary, run_once, run_rounds, spread, spread_text

    if not args.lm_eval_python.exists():
        sys.exit(
            f"{args.lm_eval_python}: no lm-eval venv; make one with `python3.11 -m venv "
            f"/work/venvs/lm-eval && /work/venvs/lm-eval/bin/pip install torch==2.13.0 "
            f"'lm-eval[hf]==0.4.13'`, or pass --lm-eval-python PYTHON"
        )
    bench_model(args.workdir)
    first = run_once(contender_command(args, "medmerge"))  # its strings make lm-eval's task
    write_lm_eval_task(args.workdir / "lm_eval_task", first.result["records"])
    print(
        f"{args.items} HEAD-QA items, continuation {args.continuation!r}, batch size "
        f"{args.batch_size}, torch threads {args.threads or 'default'}, {args.rounds} rounds"
    )
    names = ("medmerge", "floor", "lm-eval")
    rounds = run_rounds({n: contender_command(args, n) for n in names}, args.rounds)
    wall = {n: [r.wall for r in rounds.runs[n]] for n in names}
    scoring = {n: [r.result["scoring"] for r in rounds.runs[n]] for n in names}
    print()
    print("| contender | wall s, fresh process | scoring s | items/s (scoring) |")
    print("|---|---:|---:|---:|")
    for n in names:
        rate = args.items / spread(scoring[n])[1]
        print(f"| {n} | {spread_text(wall[n])} | {spread_text(scoring[n], 2)} | {rate:.1f} |")
    print(load_summary(rounds))
    median = {n: (spread(wall[n])[1], spread(scoring[n])[1]) for n in names}
    print(
        f"scoring medmerge / floor:    {median['medmerge'][1] / median['floor'][1]:.2f}  (goal <= 1.2)"
    )
    print(f"wall    medmerge / floor:    {median['medmerge'][0] / median['floor'][0]:.2f}")
    print(f"wall    lm-eval / medmerge:  {median['lm-eval'][0] / median['medmerge'][0]:.2f}")
    print(f"scoring lm-eval / medmerge:  {median['lm-eval'][1] / median['medmerge'][1]:.2f}")
    records, docs = (
        rounds.runs["medmerge"][-1].result["records"],
        rounds.runs["lm-eval"][-1].result["docs"],
    )
    same, worst, strings = compare(records, docs)
    print(
        f"identical predictions: {same}/{args.items}; request strings differing: {strings}; "
        f"max |loglik difference| {worst:.2e}"
    )
    assert strings == 0, "lm-eval was asked other strings than medmerge"
    assert same == args.items, "per-item predictions differ"


if __name__ == "__main__":
    main()
