"""Benchmark: medmerge's streamed merge vs PEFT (cat + merge_and_unload) vs a plain copy.

Makes a synthetic Qwen2-style bf16 checkpoint (1.78 B parameters by default, 1 GB shards) and
two adapters of different ranks, then runs each contender as a user would start it, each in
a fresh process timed by wall clock from here (interpreter start and imports count): `cp -r`
of the folder, the installed `medmerge merge --no-verify`, and a PEFT script. Peak RSS is each
process's own (wait4). Then medmerge's peak RSS at three model sizes.

    .venv/bin/python benchmarks/merge.py [--quick | --size 0.5B] [--rounds 5] [--json FILE]

A warm-up round, then `--rounds` interleaved rounds (the order rotates each round); before
every run the page cache is dropped and memory left to settle (`--settle`, see drop_caches),
and the load average is recorded. The table gives min / median / max per contender. The
figures depend on the machine's state (other jobs, how long ago memory was freed): compare
ratios of one run of this script, not seconds across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# torch is imported where it is used: the medmerge child must start its CLI with torch not
# yet loaded, as `medmerge merge` starts for a user (it sets OpenMP's idle policy first).

SIZES = {  # hidden, intermediate, layers, vocab, heads, kv heads
    "1.8B": (1536, 8960, 28, 151936, 12, 2),
    "0.5B": (896, 4864, 24, 151936, 14, 2),
    "tiny": (256, 704, 4, 8192, 4, 2),
}
TOOLS = ("copy", "medmerge", "peft")
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_base(folder: Path, size: str) -> int:
    """Write a random bf16 checkpoint with transformers' Qwen2 layout, shard by shard."""
    import torch
    from safetensors.torch import save_file

    hidden, inter, layers, vocab, heads, kv = SIZES[size]
    head_dim = hidden // heads
    folder.mkdir(parents=True)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "tie_word_embeddings": False,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.self_attn.q_proj.weight": (hidden, hidden),
            f"{p}.self_attn.q_proj.bias": (hidden,),
            f"{p}.self_attn.k_proj.weight": (kv * head_dim, hidden),
            f"{p}.self_attn.k_proj.bias": (kv * head_dim,),
            f"{p}.self_attn.v_proj.weight": (kv * head_dim, hidden),
            f"{p}.self_attn.v_proj.bias": (kv * head_dim,),
            f"{p}.self_attn.o_proj.weight": (hidden, hidden),
            f"{p}.mlp.gate_proj.weight": (inter, hidden),
            f"{p}.mlp.up_proj.weight": (inter, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, inter),
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.post_attention_layernorm.weight": (hidden,),
        }
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    shards, current, size_bytes = [], {}, 0
    for name, shape in shapes.items():
        current[name] = shape
        size_bytes += torch.Size(shape).numel() * 2
        if size_bytes > 1_000_000_000:
            shards.append(current)
            current, size_bytes = {}, 0
    shards.append(current)
    weight_map, params = {}, 0
    generator = torch.Generator().manual_seed(0)
    for k, shard in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {
            n: (torch.randn(s, generator=generator) * 0.02).to(torch.bfloat16)
            for n, s in shard.items()
        }
        save_file(tensors, str(folder / file), {"format": "pt"})
        params += sum(t.numel() for t in tensors.values())
        weight_map |= dict.fromkeys(shard, file)
    index = {"metadata": {"total_size": params * 2}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return params


def make_adapter(folder: Path, base: Path, rank: int, alpha: int, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    index = json.loads((base / "model.safetensors.index.json").read_text())
    hidden, inter, _layers, _vocab, heads, kv = _size_of(base)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in index["weight_map"]:
        module = name.rsplit(".", 1)[0]
        if not name.endswith(".weight") or module.rsplit(".", 1)[-1] not in TARGETS:
            continue
        out_f, in_f = _shape(name, hidden, inter, kv * (hidden // heads))
        key = f"base_model.model.{module}"
        state[f"{key}.lora_A.weight"] = torch.randn(rank, in_f, generator=generator) * 0.01
        state[f"{key}.lora_B.weight"] = torch.randn(out_f, rank, generator=generator) * 0.01
    folder.mkdir(parents=True)
    save_file(state, str(folder / "adapter_model.safetensors"), {"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "target_modules": list(TARGETS),
        "lora_dropout": 0.0,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base),
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))


def _size_of(base: Path):
    c = json.loads((base / "config.json").read_text())
    return (
        c["hidden_size"],
        c["intermediate_size"],
        c["num_hidden_layers"],
        c["vocab_size"],
        c["num_attention_heads"],
        c["num_key_value_heads"],
    )


def _shape(name: str, hidden: int, inter: int, kv_dim: int) -> tuple[int, int]:
    part = name.split(".")[-2]
    return {
        "q_proj": (hidden, hidden),
        "o_proj": (hidden, hidden),
        "k_proj": (kv_dim, hidden),
        "v_proj": (kv_dim, hidden),
        "gate_proj": (inter, hidden),
        "up_proj": (inter, hidden),
        "down_proj": (hidden, inter),
    }[part]


# ---------------------------------------------------------------- the three contenders

MEDMERGE = Path(sys.executable).with_name("medmerge")


def contender_argv(tool: str, size: str, workdir: Path) -> list[str]:
    """The command a user would run: `cp -r`, the installed `medmerge merge`, a PEFT script."""
    base, out = workdir / f"base-{size}", workdir / f"out-{tool}-{size}"
    a0, a1 = workdir / f"a0-{size}", workdir / f"a1-{size}"
    if tool == "copy":
        return ["cp", "-r", str(base), str(out)]
    if tool == "medmerge":
        adapters = ["--adapter", f"{a0}=0.3", "--adapter", f"{a1}=0.7"]
        return [
            str(MEDMERGE),
            "merge",
            "--base",
            str(base),
            *adapters,
            "--out",
            str(out),
            "--no-verify",
        ]
    return [sys.executable, __file__, "--child", tool, "--size", size, "--workdir", str(workdir)]


def run_peft(base: Path, a0: Path, a1: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    peft_model = PeftModel.from_pretrained(model, a0, adapter_name="a0")
    peft_model.load_adapter(a1, adapter_name="a1")
    peft_model.add_weighted_adapter(["a0", "a1"], [0.3, 0.7], "mix", combination_type="cat")
    peft_model.set_adapter("mix")
    peft_model.merge_and_unload().save_pretrained(out)


def run_prepare(base: Path, a0: Path, a1: Path, out: Path) -> None:
    if not base.exists():
        make_base(base, base.name.removeprefix("base-"))
        make_adapter(a0, base, rank=16, alpha=32, seed=1)
        make_adapter(a1, base, rank=64, alpha=64, seed=2)


CHILDREN = {"peft": run_peft, "prepare": run_prepare}


def child(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    paths = [work / f"{part}-{args.size}" for part in ("base", "a0", "a1")]
    CHILDREN[args.child](*paths, work / f"out-{args.child}-{args.size}")


def drop_caches(settle_s: float) -> bool:
    """Empty the page cache so the next contender reads cold (needs root); False if not allowed.

    Then wait `settle_s`: a VM guest hands freed memory back to the host bit by bit (Linux
    free page reporting, every 2 s), and memory handed back costs host page faults when it
    is touched again. A tool that starts within milliseconds of the previous run's exit
    (the copy) catches memory not yet handed back; one that imports torch first does not.
    Measured here after freeing 5 GB, the same 3.5 GB copy took 4.5 s with a 5 s wait,
    12.7 s with 15 s and 18.4 s with 30 s. The wait puts every tool in the same state.
    """
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    time.sleep(settle_s)
    return True


def run_fresh(argv: list[str], settle_s: float) -> dict:
    """One fresh process, timed by wall clock from here (interpreter start and imports count),
    its own peak RSS (wait4's rusage), and the load average just before it started."""
    cold = drop_caches(settle_s)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{argv[:2]} exited {process.returncode}:\n{stderr.decode()[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "load1": load, "cold": cold}


def measure(tool: str, size: str, workdir: Path, settle_s: float) -> dict:
    out = workdir / f"out-{tool}-{size}"
    shutil.rmtree(out, ignore_errors=True)
    row = run_fresh(contender_argv(tool, size, workdir), settle_s)
    shutil.rmtree(out, ignore_errors=True)
    return {"tool": tool, "size": size, **row}


def prepare(size: str, workdir: Path) -> int:
    """Make the inputs once, in a child (ru_maxrss survives exec: the parent stays small)."""
    base = workdir / f"base-{size}"
    if not base.exists():
        run_fresh(contender_argv("prepare", size, workdir), 0.0)
    index = json.loads((base / "model.safetensors.index.json").read_text())
    return index["metadata"]["total_size"] // 2


def interleaved(tools: list[str], size: str, workdir: Path, rounds: int, settle_s: float):
    """A warm-up round (not counted), then `rounds` rounds, the order rotating each round."""
    for tool in tools:
        measure(tool, size, workdir, settle_s)
    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
    for index in range(rounds):
        for tool in tools[index % len(tools) :] + tools[: index % len(tools)]:
            row = measure(tool, size, workdir, settle_s)
            runs[tool].append(row)
            print(
                f"round {index + 1}: {tool:<9}{row['seconds']:7.1f} s {row['peak_rss_mib']:7.0f} MiB"
                f"  load {row['load1']:.2f}",
                flush=True,
            )
    return runs


def summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    loads = [r["load1"] for r in runs]
    return {
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "load_min": min(loads),
        "load_max": max(loads),
        "cold": all(r["cold"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time the 0.63 B model, not 1.78 B")
    parser.add_argument("--size", choices=SIZES, help="model to time (default 1.8B)")
    parser.add_argument("--workdir", default="/tmp/medmerge-bench")
    parser.add_argument("--rounds", type=int, default=5, help="counted interleaved rounds")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds to wait after dropping caches"
    )
    parser.add_argument(
        "--rss-sizes", nargs="*", default=["tiny", "0.5B", "1.8B"], help="medmerge peak RSS sizes"
    )
    parser.add_argument(
        "--tools", nargs="+", choices=TOOLS, default=list(TOOLS), help="contenders to time"
    )
    parser.add_argument("--json", help="also write every run and the summary here")
    parser.add_argument("--child", choices=CHILDREN)
    args = parser.parse_args()
    if args.child:
        return child(args)
    size = args.size or ("0.5B" if args.quick else "1.8B")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    params = prepare(size, workdir)
    runs = interleaved(args.tools, size, workdir, args.rounds, args.settle)
    rss = {}
    for other in args.rss_sizes:
        prepare(other, workdir)
        rss[other] = measure("medmerge", other, workdir, args.settle)["peak_rss_mib"]
    rows = {tool: summary(tool_runs) for tool, tool_runs in runs.items()}
    report(size, params, args, rows, runs, rss)
    if args.json:
        record = {"size": size, "params": params, "rounds": args.rounds, "settle_s": args.settle}
        record |= {"summary": rows, "runs": runs, "rss_by_size": rss}
        Path(args.json).write_text(json.dumps(record, indent=2))


def report(size, params, args, rows, runs, rss) -> None:
    print(
        f"\nmodel {size}: {params / 1e9:.2f} B parameters (bf16, 1 GB shards); adapters r=16 and "
        "r=64 on 7 target modules, weights 0.3 / 0.7"
    )
    state = (
        "page cache dropped" if all(r["cold"] for r in rows.values()) else "page cache NOT dropped"
    )
    print(
        f"{args.rounds} interleaved rounds after a warm-up round; fresh process each, timed from "
        f"outside; {state} and {args.settle:g} s settle before every run"
    )
    print(f"{'tool':<10}{'median s':>10}{'min':>8}{'max':>8}{'peak RSS MiB':>14}{'load1':>12}")
    for tool, row in rows.items():
        print(
            f"{tool:<10}{row['median']:>10.1f}{row['min']:>8.1f}{row['max']:>8.1f}"
            f"{row['peak_rss_mib']:>14.0f}{row['load_min']:>6.1f}-{row['load_max']:<5.1f}"
        )
    m, p, c = rows.get("medmerge"), rows.get("peft"), rows.get("copy")
    if m and p:
        print(
            f"\nmedmerge/peft peak RSS {m['peak_rss_mib'] / p['peak_rss_mib']:.2f} (goal <= 0.35)"
        )
        print(f"medmerge/peft time     {m['median'] / p['median']:.2f} (goal <= 0.5; medians)")
    if m and c:
        per_round = [
            a["seconds"] / b["seconds"] for a, b in zip(runs["medmerge"], runs["copy"], strict=True)
        ]
        print(
            f"medmerge/copy time     {m['median'] / c['median']:.2f} (goal <= 2; medians; per "
            f"round {min(per_round):.2f}-{max(per_round):.2f})"
        )
    if rss:
        sizes = ", ".join(f"{s} {v:.0f}" for s, v in rss.items())
        spread = max(rss.values()) / min(rss.values())
        print(f"medmerge peak RSS MiB by size: {sizes}; max/min {spread:.2f} (goal <= 1.15)")


if __name__ == "__main__":
    main()
