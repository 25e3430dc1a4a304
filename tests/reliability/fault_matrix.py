"""The fault matrix: every subcommand against a generated table of bad inputs.

Each `Fault` builds its bad input in a fresh folder (copies of the shared tiny base, adapters,
merge and data, damaged as the row says) and names the command line, the exit status the
README promises and the words the one-line message must contain. tests/reliability/
test_fault_matrix.py runs every row and asserts, for each: that exit status, exactly one
`medmerge: error:` line (exit 2) and no traceback, no staging folder or lock left behind, no
output where none should be, and every input file byte-identical. docs/reliability.md is
generated from this table by scripts/reliability_doc.py (a test checks it is current).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from helpers import merge_argv


@dataclass
class World:
    """The shared, undamaged inputs; rows copy what they damage."""

    base: Path
    pt: Path
    sft: Path
    merged: Path
    texts: Path  # PT raw text (JSON lines)
    sft_data: Path  # Alpaca JSON
    gen_data: Path  # JSON lines with prompt/reference (MeQSum sample)
    mcq_data: Path  # MedQA-style JSON lines
    tmp: Path  # this row's own folder


@dataclass
class Case:
    argv: list[str]
    inputs: list[Path]  # must be byte-identical afterwards
    absent: list[Path] = field(default_factory=list)  # must not exist afterwards
    subprocess: bool = False  # run as a separate process (signals, resource limits)
    preexec: Callable[[], None] | None = None
    signal_after: str | None = None  # send SIGTERM once a staging folder exists
    check: Callable[[], None] | None = None  # more assertions on an accepted input (exit 0)


@dataclass(frozen=True)
class Fault:
    id: str
    family: str
    command: str
    fault: str  # what is wrong, in the doc's words
    build: Callable[[World], Case]
    needles: tuple[str, ...] = ()  # words the one-line message contains
    exit: int = 2
    slow: bool = False


# ------------------------------------------------------------------ helpers building bad input


def copy(src: Path, w: World, name: str | None = None) -> Path:
    dst = w.tmp / (name or src.name)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)
    return dst


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text("utf-8"))
    result = change(data)
    path.write_text(json.dumps(data if result is None else result), "utf-8")


def edit_tensors(path: Path, change: Callable[[dict], None]) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def first_key(tensors: dict, part: str) -> str:
    return next(k for k in sorted(tensors) if part in k)


def merge_case(w: World, base=None, pt=None, sft=None, *extra: str) -> Case:
    base, pt, sft = base or w.base, pt or w.pt, sft or w.sft
    out = w.tmp / "out"
    return Case(merge_argv(base, pt, sft, out, *extra), [base, pt, sft], [out])


def eval_mcq_case(w: World, model: Path, *extra: str) -> Case:
    out = w.tmp / "out"
    argv = ["eval", "mcq", "--model", str(model), "--data", str(w.mcq_data), "--out", str(out)]
    argv += ["--template", "qwen3", "--no-enable-thinking"]  # as the merged SFT adapter trained
    return Case([*argv, "--limit", "4", *extra], [model, w.mcq_data], [out])


def eval_gen_case(w: World, model: Path, *extra: str) -> Case:
    out = w.tmp / "out"
    argv = ["eval", "gen", "--model", str(model), "--data", str(w.gen_data), "--out", str(out)]
    argv += ["--template", "qwen3", "--no-enable-thinking"]
    return Case(
        [*argv, "--limit", "2", "--max-new-tokens", "4", *extra], [model, w.gen_data], [out]
    )


def train_case(w: World, data: Path, stage: str = "sft", base: Path | None = None) -> Case:
    base = base or w.base
    out = w.tmp / "out"
    argv = ["train", stage, "--base", str(base), "--data", str(data), "--out", str(out)]
    return Case([*argv, "--max-steps", "1"], [base, data], [out, w.tmp / "out.partial"])


def verify_case(w: World, merged: Path, base: Path | None = None, *extra: str) -> Case:
    base = base or w.base
    argv = ["verify", "--base", str(base), "--merged", str(merged), "--no-logits", *extra]
    return Case(argv, [base, merged, w.pt, w.sft])


def write_yaml(w: World, text: str) -> Path:
    path = w.tmp / "config.yaml"
    path.write_text(text, "utf-8")
    return path


def set_header_length(path: Path, length: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[:8] = struct.pack("<Q", length)
    path.write_bytes(bytes(raw))


def shard_index(w: World, weight_map_value: str | None, raw: str | None = None) -> Path:
    base = copy(w.base, w)
    index = base / "model.safetensors.index.json"
    if raw is not None:
        index.write_text(raw, "utf-8")
        return base
    names = list(load_file(base / "model.safetensors"))
    weight_map = {n: "model.safetensors" for n in names}
    if weight_map_value is not None:
        weight_map[names[0]] = weight_map_value
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), "utf-8")
    return base


# ------------------------------------------------------------------ the rows, by family


def _output_rows() -> list[Fault]:
    def report_onto_run(w: World) -> Case:
        run = w.tmp / "run"
        (run / "merged").mkdir(parents=True)
        shutil.copy2(w.merged / "config.json", run / "merged" / "config.json")
        return Case(["report", str(run), "--out", str(run), "--force"], [run])

    def report_existing(w: World) -> Case:
        run = w.tmp / "run"
        (run / "merged").mkdir(parents=True)
        (run / "merged" / "config.json").write_text("{}")
        mine = w.tmp / "mine"
        mine.mkdir()
        (mine / "notes.txt").write_text("mine")
        return Case(["report", str(run), "--out", str(mine)], [run, mine])

    def audit_exclude(w: World) -> Case:
        ev = w.tmp / "ev"
        ev.mkdir()
        shutil.copy2(w.gen_data, ev / "meq.jsonl")
        argv = ["audit", "leakage", "--train", str(w.sft_data), "--eval", str(ev / "meq.jsonl")]
        argv += ["--exclude", str(ev), "--out", str(w.tmp / "audit"), "--force"]
        return Case(argv, [ev, w.sft_data], [w.tmp / "audit"])

    def merge_onto(target: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            base, pt, sft = copy(w.base, w), copy(w.pt, w), copy(w.sft, w)
            out = {"base": base, "pt": pt}[target]
            return Case(merge_argv(base, pt, sft, out, "--force"), [base, pt, sft])

        return build

    def verify_report_config(w: World) -> Case:
        base = copy(w.base, w)
        case = verify_case(w, w.merged, base, "--report", str(base / "config.json"))
        return case

    def train_onto_base(w: World) -> Case:
        base = copy(w.base, w)
        argv = ["train", "pt", "--base", str(base), "--data", str(w.texts), "--out", str(base)]
        return Case([*argv, "--force", "--max-steps", "1"], [base, w.texts])

    def eval_onto_model(w: World) -> Case:
        model = copy(w.merged, w)
        case = eval_mcq_case(w, model, "--force")
        case.argv[case.argv.index("--out") + 1] = str(model)
        case.absent = []
        return case

    def score_onto_predictions(w: World) -> Case:
        folder = w.tmp / "preds"
        folder.mkdir()
        preds = folder / "p.jsonl"
        preds.write_text(json.dumps({"prediction": "a b c", "reference": "a b d"}) + "\n")
        return Case(
            ["score", "--predictions", str(preds), "--out", str(folder), "--force"], [folder]
        )

    def diagnose_onto_base(w: World) -> Case:
        base = copy(w.base, w)
        config = write_yaml(
            w,
            f"base: {base}\nadapters:\n  - {{path: {w.pt}, label: pt}}\n"
            f"  - {{path: {w.sft}, label: sft}}\nout: {base}\n",
        )
        return Case(["diagnose", "--config", str(config), "--force"], [base, w.pt, w.sft])

    def base_build_existing(w: World) -> Case:
        mine = w.tmp / "mine"
        mine.mkdir()
        (mine / "notes.txt").write_text("mine")
        return Case(["base", "build", "--out", str(mine), "--pretrain-steps", "0"], [mine])

    def sweep_onto_merge(w: World) -> Case:
        merged = copy(w.merged, w)
        config = write_yaml(
            w,
            f"base: {w.base}\nadapters:\n  - {{path: {w.pt}, label: pt}}\n"
            f"  - {{path: {w.sft}, label: sft}}\nout: {merged}\ngrid: {{pt: [0.0, 1.0], sft: complement}}\n"
            f"suites:\n  mcq:\n    - {{name: m, data: [{w.mcq_data}], limit: 2}}\n",
        )
        return Case(["sweep", str(config)], [merged, w.base, w.pt, w.sft])

    def run_into_foreign_base(w: World) -> Case:
        run = w.tmp / "run"
        (run / "base").mkdir(parents=True)
        (run / "base" / "my_model.txt").write_text("the user's own base")
        root = Path(__file__).resolve().parents[2] / "configs"
        return Case(["run", str(root / "pipeline.yaml"), "--out", str(run)], [run])

    def out_under_file(w: World) -> Case:
        blocker = w.tmp / "file"
        blocker.write_text("x")
        case = merge_case(w)
        case.argv[case.argv.index("--out") + 1] = str(blocker / "out")
        case.inputs.append(blocker)
        return case

    def out_too_long(w: World) -> Case:
        case = merge_case(w)
        case.argv[case.argv.index("--out") + 1] = str(w.tmp / ("m" * 240))
        return case

    def out_immutable_parent(w: World) -> Case:
        parent = w.tmp / "locked"
        parent.mkdir()
        os.system(f"chattr +i '{parent}' 2>/dev/null")
        case = merge_case(w)
        case.argv[case.argv.index("--out") + 1] = str(parent / "out")
        return case

    def out_not_utf8(w: World) -> Case:
        case = merge_case(w)
        case.argv[case.argv.index("--out") + 1] = os.fsdecode(bytes(w.tmp) + b"/caf\xe9")
        return case

    return [
        Fault(
            "report-onto-run",
            "output path",
            "report",
            "`--out` is the run folder itself (with --force)",
            report_onto_run,
            ("input",),
        ),
        Fault(
            "report-existing",
            "output path",
            "report",
            "`--out` is an existing folder, no --force",
            report_existing,
            ("--force",),
        ),
        Fault(
            "audit-exclude-onto-eval",
            "output path",
            "audit leakage",
            "`--exclude` is the folder holding the evaluation file",
            audit_exclude,
            ("input",),
        ),
        Fault(
            "merge-onto-base",
            "output path",
            "merge",
            "`--force --out` is the base model folder",
            merge_onto("base"),
            ("input",),
        ),
        Fault(
            "merge-onto-adapter",
            "output path",
            "merge",
            "`--force --out` is an adapter folder",
            merge_onto("pt"),
            ("input",),
        ),
        Fault(
            "verify-report-onto-config",
            "output path",
            "verify",
            "`--report` is the base's config.json",
            verify_report_config,
            ("config.json",),
        ),
        Fault(
            "train-onto-base",
            "output path",
            "train",
            "`--force --out` is the base model folder",
            train_onto_base,
            ("input",),
        ),
        Fault(
            "eval-onto-model",
            "output path",
            "eval mcq",
            "`--force --out` is the evaluated model folder",
            eval_onto_model,
            ("input",),
        ),
        Fault(
            "score-onto-predictions",
            "output path",
            "score",
            "`--force --out` is the folder holding the predictions",
            score_onto_predictions,
            ("input",),
        ),
        Fault(
            "diagnose-onto-base",
            "output path",
            "diagnose",
            "`--force`, `out:` is the base model folder",
            diagnose_onto_base,
            ("input",),
        ),
        Fault(
            "base-build-existing",
            "output path",
            "base build",
            "`--out` is an existing folder, no --force",
            base_build_existing,
            ("--force",),
        ),
        Fault(
            "sweep-onto-merge",
            "output path",
            "sweep",
            "`out:` is a merged model folder",
            sweep_onto_merge,
            ("sweep",),
        ),
        Fault(
            "run-into-foreign-base",
            "output path",
            "run",
            "the run folder holds the user's own `base/`",
            run_into_foreign_base,
            ("base",),
        ),
        Fault(
            "out-under-file",
            "output path",
            "merge",
            "`--out` lies under a file",
            out_under_file,
            ("is a file",),
        ),
        Fault(
            "out-too-long",
            "output path",
            "merge",
            "`--out` has a 240-character name",
            out_too_long,
            ("too long",),
        ),
        Fault(
            "out-immutable-parent",
            "permissions",
            "merge",
            "`--out`'s parent is immutable (chattr +i)",
            out_immutable_parent,
            ("cannot write",),
        ),
        Fault(
            "out-not-utf8",
            "encodings",
            "merge",
            "`--out` holds a byte that is not UTF-8",
            out_not_utf8,
            ("UTF-8",),
        ),
    ]


def _adapter_rows() -> list[Fault]:
    def config_change(change: Callable[[dict], object]) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            pt = copy(w.pt, w)
            edit_json(pt / "adapter_config.json", change)
            return merge_case(w, None, pt)

        return build

    def config_bytes(raw: bytes) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            pt = copy(w.pt, w)
            (pt / "adapter_config.json").write_bytes(raw)
            return merge_case(w, None, pt)

        return build

    def factors(change: Callable[[dict], None], *extra: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            pt = copy(w.pt, w)
            edit_tensors(pt / "adapter_model.safetensors", change)
            return merge_case(w, None, pt, None, *extra)

        return build

    def nan_factor(tensors: dict) -> None:
        tensors[first_key(tensors, "lora_B")][0, 0] = float("nan")

    def inf_factor(tensors: dict) -> None:
        tensors[first_key(tensors, "lora_A")][0, 0] = float("inf")

    def int_factors(tensors: dict) -> None:
        for k in list(tensors):
            tensors[k] = (tensors[k] * 1000).to(torch.int32)

    def fp8_factors(tensors: dict) -> None:
        for k in list(tensors):
            tensors[k] = tensors[k].to(torch.float8_e4m3fn)

    def for_a_wider_base(w: World) -> Path:
        """A copy of the SFT adapter whose lora_A factors expect a base twice as wide."""
        sft = copy(w.sft, w)

        def widen(tensors: dict) -> None:
            for k in list(tensors):
                if "lora_A" in k:
                    tensors[k] = torch.zeros(tensors[k].shape[0], tensors[k].shape[1] * 2)

        edit_tensors(sft / "adapter_model.safetensors", widen)
        return sft

    def other_base(w: World) -> Case:
        return merge_case(w, None, None, for_a_wider_base(w))

    def eval_other_base(w: World) -> Case:
        sft = for_a_wider_base(w)
        out = w.tmp / "out"
        argv = ["eval", "gen", "--base", str(w.base), "--adapter", f"{sft}=1"]
        argv += ["--data", str(w.gen_data), "--out", str(out), "--limit", "2"]
        argv += ["--allow-template-mismatch"]
        return Case(argv, [w.base, sft, w.gen_data], [out])

    def truncated(w: World) -> Case:
        pt = copy(w.pt, w)
        weights = pt / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
        return merge_case(w, None, pt)

    def weight_nan(w: World) -> Case:
        case = merge_case(w)
        case.argv[case.argv.index(f"{w.pt}=0.3")] = f"{w.pt}=nan"
        return case

    def symlink_loop(w: World) -> Case:
        pt = copy(w.pt, w)
        weights = pt / "adapter_model.safetensors"
        weights.unlink()
        loop = pt / "loop"
        os.symlink(loop, weights)
        os.symlink(weights, loop)
        return merge_case(w, None, pt)

    return [
        Fault(
            "adapter-alpha-string",
            "types",
            "merge",
            '`lora_alpha: "16"` in adapter_config.json',
            config_change(lambda c: c.update(lora_alpha="16")),
            ("lora_alpha",),
        ),
        Fault(
            "adapter-r-string",
            "types",
            "merge",
            '`r: "8"` in adapter_config.json',
            config_change(lambda c: c.update(r="8")),
            ("adapter_config.json",),
        ),
        Fault(
            "adapter-config-list",
            "types",
            "merge",
            "adapter_config.json is a JSON list",
            config_change(lambda c: [c]),
            ("adapter_config.json",),
        ),
        Fault(
            "adapter-config-not-utf8",
            "encodings",
            "merge",
            "adapter_config.json holds non-UTF-8 bytes",
            config_bytes(b'{"r": 8, "lora_alpha": 16, "x": "\xff"}'),
            ("adapter_config.json",),
        ),
        Fault(
            "adapter-bad-regex",
            "types",
            "merge",
            "`alpha_pattern` key is not a valid regex",
            config_change(lambda c: c.update(alpha_pattern={"q_proj(": 4})),
            ("alpha_pattern",),
        ),
        Fault(
            "adapter-target-modules-int",
            "types",
            "merge",
            "`target_modules: 3`",
            config_change(lambda c: c.update(target_modules=3)),
            ("target_modules",),
        ),
        Fault(
            "adapter-nan",
            "NaN/inf",
            "merge",
            "a NaN in an adapter factor",
            factors(nan_factor),
            ("NaN",),
        ),
        Fault(
            "adapter-inf-export-adapter",
            "NaN/inf",
            "merge --export adapter",
            "an Inf in an adapter factor, adapter export",
            factors(inf_factor, "--export", "adapter"),
            ("Inf",),
        ),
        Fault(
            "adapter-int32",
            "types",
            "merge",
            "integer (int32) adapter factors",
            factors(int_factors),
            ("int32",),
        ),
        Fault(
            "adapter-fp8",
            "types",
            "merge",
            "fp8 (float8_e4m3fn) adapter factors",
            factors(fp8_factors),
            ("float8",),
        ),
        Fault(
            "adapter-other-base",
            "shapes",
            "merge",
            "an adapter trained on a base of another width",
            other_base,
            ("sft",),
        ),
        Fault(
            "eval-adapter-other-base",
            "shapes",
            "eval gen",
            "`--base A --adapter B`, B for another width",
            eval_other_base,
            ("sft",),
        ),
        Fault(
            "adapter-truncated",
            "truncation",
            "merge",
            "adapter_model.safetensors cut short",
            truncated,
            ("adapter_model.safetensors",),
        ),
        Fault(
            "adapter-symlink-loop",
            "symlinks",
            "merge",
            "adapter weights are a symlink loop",
            symlink_loop,
            ("adapter_model.safetensors",),
        ),
        Fault("weight-nan", "NaN/inf", "merge", "`--adapter PATH=nan`", weight_nan, ("nan",)),
    ]


def _checkpoint_rows() -> list[Fault]:
    def header(length: int) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            base = copy(w.base, w)
            set_header_length(base / "model.safetensors", length)
            return merge_case(w, base)

        return build

    def index(value: str | None, raw: str | None = None) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            return merge_case(w, shard_index(w, value, raw))

        return build

    def config_bom(w: World) -> Case:
        base = copy(w.base, w)
        cfg = base / "config.json"
        cfg.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
        return merge_case(w, base, None, None, "--no-verify")

    def hidden_size(w: World) -> Case:
        base = copy(w.base, w)
        edit_json(base / "config.json", lambda c: c.update(hidden_size=64))
        return merge_case(w, base)

    def model_missing(part: str, untie: bool = False) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            model = copy(w.merged, w)
            if untie:
                edit_json(model / "config.json", lambda c: c.update(tie_word_embeddings=False))
            else:
                edit_tensors(model / "model.safetensors", lambda t: t.pop(first_key(t, part)))
            return eval_mcq_case(w, model)

        return build

    def model_nan(w: World) -> Case:
        model = copy(w.merged, w)

        def poison(tensors: dict) -> None:
            tensors[first_key(tensors, "q_proj")][0, 0] = float("nan")

        edit_tensors(model / "model.safetensors", poison)
        return eval_mcq_case(w, model)

    def bert_config(w: World) -> Case:
        model = copy(w.merged, w)
        (model / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "bert",
                    "architectures": ["BertForMaskedLM"],
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "intermediate_size": 64,
                    "vocab_size": 1024,
                    "is_decoder": True,
                }
            )
        )
        return eval_gen_case(w, model)

    def t5_config(w: World) -> Case:
        base = copy(w.base, w)
        (base / "config.json").write_text(
            json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]})
        )
        return train_case(w, w.texts, "pt", base)

    def auto_map(w: World) -> Case:
        base = copy(w.base, w)
        edit_json(
            base / "config.json",
            lambda c: c.update(auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"}),
        )
        return train_case(w, w.texts, "pt", base)

    def pickle_only(w: World) -> Case:
        model = copy(w.merged, w)
        tensors = load_file(model / "model.safetensors")
        (model / "model.safetensors").unlink()
        torch.save(tensors, model / "pytorch_model.bin")
        return eval_mcq_case(w, model)

    def missing_model(w: World) -> Case:
        return eval_mcq_case(w, w.tmp / "runs" / "merged")

    def verify_header_too_long(w: World) -> Case:
        merged = copy(w.merged, w)
        size = (merged / "model.safetensors").stat().st_size
        set_header_length(merged / "model.safetensors", size * 2)
        return verify_case(w, merged)

    return [
        Fault(
            "base-header-too-long",
            "truncation",
            "merge",
            "base safetensors header claims more bytes than the file",
            header(10**7),
            ("model.safetensors",),
        ),
        Fault(
            "base-header-huge",
            "truncation",
            "merge",
            "a 10^15-byte safetensors header length",
            header(10**15),
            ("model.safetensors",),
        ),
        Fault(
            "merged-header-too-long",
            "truncation",
            "verify",
            "merged safetensors header claims more bytes than the file",
            verify_header_too_long,
            ("model.safetensors",),
        ),
        Fault(
            "index-bad-json",
            "truncation",
            "merge",
            "model.safetensors.index.json is not JSON",
            index(None, '{"weight_map": '),
            ("index.json",),
        ),
        Fault(
            "index-no-weight-map",
            "types",
            "merge",
            "index without `weight_map`",
            index(None, '{"metadata": {}}'),
            ("weight_map",),
        ),
        Fault(
            "index-parent-path",
            "index paths",
            "merge",
            "a `weight_map` entry names `../../x`",
            index("../../x.safetensors"),
            ("weight_map",),
        ),
        Fault(
            "index-absolute-path",
            "index paths",
            "merge",
            "a `weight_map` entry names `/abs/x`",
            index("/etc/x.safetensors"),
            ("weight_map",),
        ),
        Fault(
            "config-bom",
            "encodings",
            "merge",
            "config.json starts with a UTF-8 BOM (transformers cannot read it)",
            config_bom,
            ("byte-order mark",),
        ),
        Fault(
            "config-hidden-size",
            "shapes",
            "merge",
            "config.json's hidden_size disagrees with the tensors",
            hidden_size,
            ("hidden_size",),
        ),
        Fault(
            "model-missing-down-proj",
            "shapes",
            "eval mcq",
            "a model folder without one down_proj",
            model_missing("down_proj"),
            ("down_proj",),
        ),
        Fault(
            "model-missing-lm-head",
            "shapes",
            "eval mcq",
            "untied config, no lm_head tensor",
            model_missing("lm_head", untie=True),
            ("lm_head",),
        ),
        Fault(
            "model-nan",
            "NaN/inf",
            "eval mcq",
            "a NaN in the model's weights",
            model_nan,
            ("q_proj",),
        ),
        Fault(
            "model-bert-config",
            "foreign architectures",
            "eval gen",
            "a BERT config over Qwen weights",
            bert_config,
            ("config",),
        ),
        Fault(
            "train-t5-config",
            "foreign architectures",
            "train pt",
            "a T5 config as the base",
            t5_config,
            ("t5",),
        ),
        Fault(
            "train-auto-map",
            "foreign architectures",
            "train pt",
            "a config with `auto_map` (remote code), not trusted",
            auto_map,
            ("trust_remote_code",),
        ),
        Fault(
            "model-pickle-only",
            "types",
            "eval mcq",
            "a model folder of pytorch_model.bin only",
            pickle_only,
            ("--allow-pickle",),
        ),
        Fault(
            "model-missing-path",
            "paths",
            "eval mcq",
            "`--model runs/merged` that does not exist (no hub lookup)",
            missing_model,
            ("no such model folder",),
        ),
    ]


def _data_rows() -> list[Fault]:
    def sft_bytes(raw: bytes, name: str = "sft.json") -> Callable[[World], Case]:
        def build(w: World) -> Case:
            data = w.tmp / name
            data.write_bytes(raw)
            return train_case(w, data)

        return build

    def yaml_merge(text: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            config = write_yaml(w, text)
            return Case(
                ["merge", "--config", str(config), "--out", str(w.tmp / "out")],
                [config],
                [w.tmp / "out"],
            )

        return build

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
    )

    def separators(w: World) -> Case:
        data = w.tmp / "gen.jsonl"
        rows = [
            {"prompt": f"Question\u2028 {i}\u2029?", "reference": f"Answer\u0085 {i}"}
            for i in range(3)
        ]
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        out = w.tmp / "out"
        argv = ["eval", "gen", "--model", str(w.merged), "--data", str(data), "--out", str(out)]
        argv += ["--template", "qwen3", "--no-enable-thinking", "--max-new-tokens", "2"]

        def three_records() -> None:
            results = json.loads((out / "results.json").read_text("utf-8"))
            assert results["n"] == 3, results

        return Case(argv, [w.merged, data], check=three_records)

    def data_symlink_loop(w: World) -> Case:
        data = w.tmp / "loop.jsonl"
        os.symlink(w.tmp / "loop2.jsonl", data)
        os.symlink(data, w.tmp / "loop2.jsonl")
        return train_case(w, data, "pt")

    def mcq_truncated(w: World) -> Case:
        data = w.tmp / "mcq.jsonl"
        data.write_text(w.mcq_data.read_text("utf-8")[:-40], "utf-8")
        case = eval_mcq_case(w, w.merged)
        case.argv[case.argv.index("--data") + 1] = str(data)
        case.inputs.append(data)
        return case

    def huge_line(w: World) -> Case:
        data = w.tmp / "sft.jsonl"
        record = {"instruction": "q " * (25 * 1024 * 1024), "output": "a"}
        data.write_text(json.dumps(record) + "\n", "utf-8")
        return train_case(w, data)

    return [
        Fault(
            "sft-not-utf8",
            "encodings",
            "train sft",
            "a non-UTF-8 byte in the SFT file",
            sft_bytes(b'[{"instruction": "q\xff", "output": "a"}]'),
            ("UTF-8",),
        ),
        Fault(
            "sft-invalid-json",
            "truncation",
            "train sft",
            "the SFT file cut off mid-record",
            sft_bytes(b'[{"instruction": "q", "output": '),
            ("sft.json",),
        ),
        Fault(
            "sft-empty", "truncation", "train sft", "an empty SFT file", sft_bytes(b""), ("empty",)
        ),
        Fault(
            "sft-huge-line",
            "truncation",
            "train sft",
            "a 50 MB JSON line",
            huge_line,
            ("sft.jsonl",),
        ),
        Fault(
            "data-symlink-loop",
            "symlinks",
            "train pt",
            "the data file is a symlink loop",
            data_symlink_loop,
            ("loop.jsonl",),
        ),
        Fault(
            "mcq-truncated",
            "truncation",
            "eval mcq",
            "the MCQ file cut off mid-line",
            mcq_truncated,
            ("mcq.jsonl",),
        ),
        Fault(
            "jsonl-line-separators",
            "encodings",
            "eval gen",
            "U+2028/U+2029/U+0085 inside JSON strings (read as 3 records)",
            separators,
            (),
            0,
        ),
        Fault(
            "yaml-recursive-alias",
            "types",
            "merge",
            "a YAML config with a recursive alias",
            yaml_merge("a: &a [*a]\nbase: x\n"),
            ("config.yaml",),
        ),
        Fault(
            "yaml-billion-laughs",
            "types",
            "merge",
            "a billion-laughs YAML config",
            yaml_merge(laughs),
            ("config.yaml",),
        ),
        Fault(
            "yaml-not-mapping",
            "types",
            "merge",
            "a YAML config that is a list",
            yaml_merge("- a\n- b\n"),
            ("config.yaml",),
        ),
    ]


def _concurrency_rows() -> list[Fault]:
    def locked(build_case: Callable[[World], Case], target: Callable[[World, Case], Path]):
        def build(w: World) -> Case:
            import socket
            import subprocess
            import sys

            case = build_case(w)
            holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            w.tmp.joinpath(".holder-pid").write_text(str(holder.pid))
            path = target(w, case)
            lock = path.parent / f".{path.name}.medmerge-lock"
            lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))
            case.inputs.append(lock)
            return case

        return build

    def merge_target(w: World, case: Case) -> Path:
        return Path(case.argv[case.argv.index("--out") + 1])

    def verify_live(w: World) -> Case:
        merged = copy(w.merged, w)
        return verify_case(w, merged)

    def verify_target(w: World, case: Case) -> Path:
        return Path(case.argv[case.argv.index("--merged") + 1])

    def pipeline(w: World) -> Case:
        config = Path(__file__).resolve().parents[2] / "configs" / "pipeline.yaml"
        run = w.tmp / "run"
        return Case(["run", str(config), "--out", str(run)], [config], [run / "base"])

    def run_target(w: World, case: Case) -> Path:
        return Path(case.argv[case.argv.index("--out") + 1])

    def sigterm_base(w: World) -> Case:
        out = w.tmp / "out"
        case = Case(["base", "build", "--out", str(out), "--pretrain-steps", "100000"], [], [out])
        case.subprocess = True
        case.signal_after = "staging"
        return case

    def disk_full(w: World) -> Case:
        import resource

        case = merge_case(w)
        case.subprocess = True
        case.preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        return case

    return [
        Fault(
            "merge-concurrent",
            "concurrency",
            "merge",
            "a second merge while another holds `--out`",
            locked(merge_case, merge_target),
            ("another medmerge process",),
        ),
        Fault(
            "train-concurrent",
            "concurrency",
            "train pt",
            "a second train on an OUT whose `.partial` is live",
            locked(lambda w: train_case(w, w.texts, "pt"), merge_target),
            ("another medmerge process",),
        ),
        Fault(
            "verify-while-written",
            "concurrency",
            "verify",
            "verify while a merge holds the merged folder",
            locked(verify_live, verify_target),
            ("writing it right now",),
        ),
        Fault(
            "run-concurrent",
            "concurrency",
            "run",
            "a second `run` on a run folder another `run` holds",
            locked(pipeline, run_target),
            ("another medmerge process",),
        ),
        Fault(
            "sigterm-base-build",
            "signals",
            "base build",
            "SIGTERM mid-build",
            sigterm_base,
            (),
            143,
        ),
        Fault(
            "merge-disk-full",
            "disk full",
            "merge",
            "the disk fills up (RLIMIT_FSIZE) mid-merge",
            disk_full,
            ("File too large",),
        ),
    ]


def _other_command_rows() -> list[Fault]:
    def score(content: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            preds = w.tmp / "preds.jsonl"
            preds.write_text(content, "utf-8")
            out = w.tmp / "out"
            return Case(["score", "--predictions", str(preds), "--out", str(out)], [preds], [out])

        return build

    def score_tokenizer_missing(w: World) -> Case:
        case = score(json.dumps({"prediction": "a", "reference": "b"}) + "\n")(w)
        case.argv += ["--tokenizer", str(w.tmp / "no-tokenizer")]
        return case

    def safety_prompts(w: World) -> Case:
        prompts = w.tmp / "prompts.jsonl"
        prompts.write_text(json.dumps({"id": 1, "prompt": 3}) + "\n", "utf-8")
        out = w.tmp / "out"
        argv = ["eval", "safety", "--model", str(w.merged), "--prompts", str(prompts)]
        argv += ["--out", str(out), "--template", "qwen3", "--no-enable-thinking"]
        return Case(argv, [prompts, w.merged], [out])

    def sweep_yaml(text: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            config = write_yaml(w, text.format(w=w))
            out = w.tmp / "out"
            return Case(["sweep", str(config), "--out", str(out)], [config], [out])

        return build

    sweep_ok = (
        "base: {w.base}\nadapters:\n  - {{path: {w.pt}, label: pt}}\n"
        "  - {{path: {w.sft}, label: sft}}\ngrid: {{pt: [0.0, 1.0], sft: complement}}\n"
    )

    def diagnose_missing_adapter(w: World) -> Case:
        config = write_yaml(
            w,
            f"base: {w.base}\nadapters:\n  - {{path: {w.tmp / 'gone'}, label: pt}}\n"
            f"  - {{path: {w.sft}, label: sft}}\nout: {w.tmp / 'out'}\n",
        )
        return Case(["diagnose", "--config", str(config)], [config], [w.tmp / "out"])

    def audit_not_utf8(w: World) -> Case:
        train = w.tmp / "train.jsonl"
        train.write_bytes(b'{"text": "caf\xe9"}\n')
        out = w.tmp / "out"
        argv = ["audit", "leakage", "--train", str(train), "--eval", str(w.gen_data)]
        return Case([*argv, "--out", str(out)], [train, w.gen_data], [out])

    def run_unknown_key(w: World) -> Case:
        root = Path(__file__).resolve().parents[2] / "configs"
        config = w.tmp / "pipeline.yaml"
        text = (root / "pipeline.yaml").read_text("utf-8").replace("out: ../runs/demo", "")
        for name in ("base", "pt", "sft", "merge", "verify", "sweep"):
            text = text.replace(f"{name}: {name}.yaml", f"{name}: {root / (name + '.yaml')}")
        config.write_text(text + "merg: typo\n", "utf-8")
        out = w.tmp / "out"
        return Case(["run", str(config), "--out", str(out)], [config], [out])

    def demo_onto_file(w: World) -> Case:
        blocker = w.tmp / "file"
        blocker.write_text("x")
        return Case(["demo", "--out", str(blocker)], [blocker])

    def verify_weight(kind: str) -> Callable[[World], Case]:
        def build(w: World) -> Case:
            merged = copy(w.merged, w)
            argv = ["verify", "--base", str(w.base), "--merged", str(merged), "--no-logits"]
            if kind == "swapped":
                argv += ["--adapter", f"{w.pt}=0.7", "--adapter", f"{w.sft}=0.3"]
            else:
                edit_tensors(
                    merged / "model.safetensors",
                    lambda t: t[first_key(t, "q_proj")].mul_(1.5),
                )
            argv += ["--report", str(w.tmp / "verify.json")]
            return Case(argv, [w.base, w.pt, w.sft])

        return build

    def verify_tokenizer_edited(w: World) -> Case:
        merged = copy(w.merged, w)
        template = merged / "chat_template.jinja"
        template.write_text(template.read_text("utf-8").replace("<think>", "<reasoning>"), "utf-8")
        argv = ["verify", "--base", str(w.base), "--merged", str(merged), "--no-logits"]
        return Case([*argv, "--report", str(w.tmp / "verify.json")], [w.base, w.pt, w.sft])

    def eval_memory_limit(w: World) -> Case:
        import resource

        case = eval_mcq_case(w, w.merged)
        case.subprocess = True
        limit = 450 * 2**20  # below what torch and a model need: fails in the import or the load
        case.preexec = lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        return case

    def eval_disk_full(w: World) -> Case:
        import resource

        case = eval_mcq_case(w, w.merged)
        case.subprocess = True
        case.preexec = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
        return case

    def moe_per_expert(w: World) -> Case:
        from transformers import MixtralConfig, MixtralForCausalLM

        from medmerge.cli import main

        base, adapter, merged = w.tmp / "moe", w.tmp / "moe-lora", w.tmp / "merged"
        torch.manual_seed(0)
        config = MixtralConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_local_experts=2,
            num_experts_per_tok=1,
        )  # fmt: skip
        MixtralForCausalLM(config).save_pretrained(base)  # per-expert w1/w2/w3 on disk
        adapter.mkdir()
        key = "base_model.model.model.layers.0.block_sparse_moe.experts.0.w2"
        factors = {
            f"{key}.lora_A.weight": torch.randn(2, 32),
            f"{key}.lora_B.weight": torch.randn(16, 2),
        }
        save_file({k: v * 1e-2 for k, v in factors.items()}, adapter / "adapter_model.safetensors")
        (adapter / "adapter_config.json").write_text(
            json.dumps(
                {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["w2"],
                 "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False}
            )
        )  # fmt: skip
        assert (
            main(["merge", "--base", str(base), "--adapter", f"{adapter}=1", "--out", str(merged)])
            == 0
        )
        report = w.tmp / "verify.json"
        argv = ["verify", "--base", str(base), "--merged", str(merged), "--adapter", f"{adapter}=1"]

        def skipped_with_a_warning() -> None:
            record = json.loads(report.read_text("utf-8"))
            assert record["ok"] and record["tensors_touched"] == 1, record
            assert any("behaviour check skipped" in line for line in record["warnings"]), record

        return Case(
            [*argv, "--report", str(report)], [base, adapter, merged], check=skipped_with_a_warning
        )

    return [
        Fault(
            "eval-memory-limit",
            "memory",
            "eval mcq",
            "a memory limit (ulimit -v 450 MB) too small for torch and the model",
            eval_memory_limit,
            ("out of memory",),
        ),
        Fault(
            "verify-moe-per-expert",
            "foreign architectures",
            "verify",
            "a per-expert MoE adapter (Mixtral `experts.0.w2`): transformers loads the experts "
            "fused, so the logits check is skipped with a warning; the tensor checks run",
            moe_per_expert,
            (),
            0,
        ),
        Fault(
            "score-missing-field",
            "types",
            "score",
            "a predictions line without `prediction`",
            score(json.dumps({"reference": "b"}) + "\n"),
            ("prediction",),
        ),
        Fault(
            "score-not-json",
            "truncation",
            "score",
            "a predictions line cut off mid-record",
            score('{"prediction": "a", "refer\n'),
            ("preds.jsonl",),
        ),
        Fault(
            "score-tokenizer-missing",
            "paths",
            "score",
            "`--tokenizer` names no folder",
            score_tokenizer_missing,
            ("no-tokenizer",),
        ),
        Fault(
            "safety-prompt-type",
            "types",
            "eval safety",
            "a safety prompt that is a number",
            safety_prompts,
            ("prompts.jsonl",),
        ),
        Fault(
            "sweep-missing-suites",
            "types",
            "sweep",
            "a sweep config without suites",
            sweep_yaml(sweep_ok),
            ("suites",),
        ),
        Fault(
            "sweep-bad-grid",
            "types",
            "sweep",
            "`grid: {pt: [0.0, abc]}`",
            sweep_yaml(sweep_ok.replace("[0.0, 1.0]", "[0.0, abc]") + "suites: {{}}\n"),
            ("grid",),
        ),
        Fault(
            "diagnose-missing-adapter",
            "paths",
            "diagnose",
            "an adapter folder that does not exist",
            diagnose_missing_adapter,
            ("gone",),
        ),
        Fault(
            "audit-not-utf8",
            "encodings",
            "audit leakage",
            "a training file with a non-UTF-8 byte",
            audit_not_utf8,
            ("train.jsonl",),
        ),
        Fault(
            "run-unknown-key",
            "types",
            "run",
            "a pipeline YAML with the key `merg`",
            run_unknown_key,
            ("merg",),
        ),
        Fault(
            "demo-onto-file",
            "output path",
            "demo",
            "`--out` is an existing file",
            demo_onto_file,
            ("file",),
        ),
        Fault(
            "verify-swapped",
            "wrong merges",
            "verify",
            "the intended weights swapped (verification fails)",
            verify_weight("swapped"),
            (),
            1,
        ),
        Fault(
            "verify-edited-tensor",
            "wrong merges",
            "verify",
            "a merged tensor edited after the merge (verification fails)",
            verify_weight("edited"),
            (),
            1,
        ),
        Fault(
            "verify-template-edited",
            "wrong merges",
            "verify",
            "the merged folder's chat template edited (verification fails)",
            verify_tokenizer_edited,
            (),
            1,
        ),
        Fault(
            "eval-disk-full",
            "disk full",
            "eval mcq",
            "the disk fills up (RLIMIT_FSIZE) while results are written",
            eval_disk_full,
            ("File too large",),
        ),
    ]


FAULTS: list[Fault] = [
    *_output_rows(),
    *_adapter_rows(),
    *_checkpoint_rows(),
    *_data_rows(),
    *_concurrency_rows(),
    *_other_command_rows(),
]
