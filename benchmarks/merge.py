"""Benchmark: medmerge's streamed merge vs PEFT (cat + merge_and_unload) vs a plain copy.

Makes a synthetic Qwen2-style bf16 checkpoint (~1.78 B parameters, several shards) and two
adapters of different ranks, then runs each tool in its own subprocess (so peak RSS is its
own) and prints time and peak RSS side by side, plus medmerge's peak RSS at a second size.

    .venv/bin/python benchmarks/merge.py [--quick] [--rounds N] [--workdir DIR]

The contenders run in interleaved rounds (copy, medmerge, PEFT, then again) with the page
cache dropped before each, and the table shows each tool's median. On a VM, memory the
guest freed a while ago costs host page faults when touched again (here the same 3.5 GB copy
took 4.5 s or 18 s depending on how long before it memory was freed), so every run starts
after the same settling wait (`--settle`, see drop_caches).
"""

from __future__ import annotations

import argparse
import json
import resource
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


def run_medmerge(base: Path, a0: Path, a1: Path, out: Path) -> None:
    from medmerge.cli import main

    code = main(
        [
            "merge",
            "--base",
            str(base),
            "--adapter",
            f"{a0}=0.3",
            "--adapter",
            f"{a1}=0.7",
            "--out",
            str(out),
            "--no-verify",
        ]
    )
    assert code == 0, code


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


def run_copy(base: Path, a0: Path, a1: Path, out: Path) -> None:
    """An honest copy: every file of the checkpoint through shutil.copyfile."""
    out.mkdir(parents=True)
    for file in sorted(base.iterdir()):
        shutil.copyfile(file, out / file.name)


def run_prepare(base: Path, a0: Path, a1: Path, out: Path) -> None:
    """Make the inputs in a child too: ru_maxrss survives exec, so the parent must stay small."""
    if not base.exists():
        make_base(base, base.name.removeprefix("base-"))
        make_adapter(a0, base, rank=16, alpha=32, seed=1)
        make_adapter(a1, base, rank=64, alpha=64, seed=2)


CONTENDERS = {"medmerge": run_medmerge, "peft": run_peft, "copy": run_copy, "prepare": run_prepare}


def child(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    out = work / f"out-{args.child}-{args.size}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    CONTENDERS[args.child](
        work / f"base-{args.size}", work / f"a0-{args.size}", work / f"a1-{args.size}", out
    )
    seconds = time.perf_counter() - start
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tool": args.child, "seconds": seconds, "peak_rss_mib": rss_mib}))
    shutil.rmtree(out, ignore_errors=True)


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


def measure(tool: str, size: str, workdir: Path, settle_s: float = 0.0) -> dict:
    cold = drop_caches(settle_s) if tool != "prepare" else False
    cmd = [sys.executable, __file__, "--child", tool, "--size", size, "--workdir", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{result.stderr[-3000:]}")
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "cold": cold}


def prepare(size: str, workdir: Path) -> int:
    base = workdir / f"base-{size}"
    measure("prepare", size, workdir)
    index = json.loads((base / "model.safetensors.index.json").read_text())
    return index["metadata"]["total_size"] // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a small model (tiny + 0.5B instead of 0.5B + 1.8B)"
    )
    parser.add_argument("--workdir", default="/tmp/medmerge-bench")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each tool")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds to wait after dropping caches"
    )
    parser.add_argument("--child", choices=CONTENDERS)
    parser.add_argument("--size", choices=SIZES, default="1.8B")
    args = parser.parse_args()
    if args.child:
        return child(args)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    main_size, other_size = ("0.5B", "tiny") if args.quick else ("1.8B", "0.5B")
    params = prepare(main_size, workdir)
    prepare(other_size, workdir)
    runs: dict[str, list[dict]] = {tool: [] for tool in ("copy", "medmerge", "peft")}
    for round_index in range(args.rounds):
        for tool in runs:
            runs[tool].append(measure(tool, main_size, workdir, args.settle))
            row = runs[tool][-1]
            print(
                f"round {round_index + 1}: {tool:<9}{row['seconds']:7.1f} s {row['peak_rss_mib']:7.0f} MiB"
            )
    rows = {tool: _median_row(tool_runs) for tool, tool_runs in runs.items()}
    other = measure("medmerge", other_size, workdir, args.settle)
    print(
        f"\nmodel {params / 1e9:.2f} B parameters (bf16, 1 GB shards); adapters r=16 and r=64, 7 target modules"
    )
    print(
        f"median of {args.rounds} interleaved rounds; before each run the page cache was dropped "
        f"and memory settled for {args.settle:g} s"
    )
    print(f"{'tool':<10}{'seconds':>10}{'min':>8}{'max':>8}{'peak RSS MiB':>15}{'page cache':>12}")
    for tool, row in rows.items():
        cache = "cold" if row["cold"] else "warm"
        print(
            f"{tool:<10}{row['seconds']:>10.1f}{row['min']:>8.1f}{row['max']:>8.1f}"
            f"{row['peak_rss_mib']:>15.0f}{cache:>12}"
        )
    m, p, c = rows["medmerge"], rows["peft"], rows["copy"]
    print(f"\nmedmerge/peft peak RSS {m['peak_rss_mib'] / p['peak_rss_mib']:.2f} (goal <= 0.35)")
    print(f"medmerge/peft time     {m['seconds'] / p['seconds']:.2f} (goal <= 0.5)")
    print(f"medmerge/copy time     {m['seconds'] / c['seconds']:.2f} (goal <= 2)")
    print(
        f"medmerge peak RSS at {other_size}: {other['peak_rss_mib']:.0f} MiB vs {m['peak_rss_mib']:.0f} MiB at {main_size}"
    )


def _median_row(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    return {
        "seconds": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "cold": all(r["cold"] for r in runs),
    }


if __name__ == "__main__":
    main()
