"""The `medmerge` command: parse, build a stage config, call the stage. No logic here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medmerge import __version__
from medmerge.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    MedmergeError,
    Terminated,
)


def _adapter_weight(text: str) -> dict[str, object]:
    path, sep, weight = text.rpartition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH=WEIGHT, e.g. runs/pt=0.3")
    try:
        return {"path": path, "weight": float(weight)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: weight {weight!r} is not a number") from None


def _add_common(parser: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        parser.add_argument("--config", help="YAML file; flags given here override it")
        parser.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="override any config key (repeatable)",
        )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")


def _stage_config(schema, args: argparse.Namespace, overrides: dict[str, object], config_file=None):
    """The stage's config: its YAML (`--config`, or a positional file), then flags, then --set."""
    from medmerge.config import build_config, parse_set_overrides

    return build_config(
        schema,
        config_file if config_file is not None else getattr(args, "config", None),
        {**overrides, **parse_set_overrides(args.set)},
        section=getattr(args, "section", None),
    )


# ---------------------------------------------------------------- base


def _cmd_base_build(args: argparse.Namespace) -> int:
    from medmerge.base import BaseBuildConfig, build_base

    overrides = {
        "out": args.out,
        "seed": args.seed,
        "pretrain_steps": args.pretrain_steps,
        "force": args.force or None,
    }
    cfg = _stage_config(BaseBuildConfig, args, overrides)
    build_base(cfg)
    return 0


def _add_base(sub: argparse._SubParsersAction) -> None:
    base = sub.add_parser("base", help="the tiny default base model")
    base_sub = base.add_subparsers(dest="base_command", required=True)
    build = base_sub.add_parser("build", help="build the tiny Qwen3 base model and tokenizer")
    build.add_argument("--out", help="output folder (a Hugging Face model folder)")
    build.add_argument("--seed", type=int)
    build.add_argument("--pretrain-steps", type=int, help="0 skips the brief pretraining")
    _force_flag(build)
    _add_common(build)
    build.set_defaults(func=_cmd_base_build)


# ---------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from medmerge.train import TrainConfig, train

    overrides = {
        "stage": args.stage,
        "base": args.base,
        "data": args.data,
        "out": args.out,
        "template": args.template,
        "enable_thinking": args.enable_thinking,
        "max_steps": args.max_steps,
        "seed": args.seed,
        "force": args.force or None,
    }
    cfg = _stage_config(TrainConfig, args, overrides)
    train(cfg)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a LoRA adapter (pt: raw text, sft: QA pairs)")
    train_sub = train.add_subparsers(dest="stage", required=True)
    for stage, what in (
        ("pt", "domain pretraining on raw text"),
        ("sft", "supervised fine-tuning"),
    ):
        p = train_sub.add_parser(stage, help=what)
        p.add_argument("--base", help="base model folder")
        p.add_argument("--data", nargs="+", help="data file(s)")
        p.add_argument("--out", help="adapter output folder")
        _template_flags(p)
        p.add_argument("--max-steps", type=int)
        p.add_argument("--seed", type=int)
        _force_flag(p)
        _add_common(p)
        p.set_defaults(func=_cmd_train)


# ---------------------------------------------------------------- merge


def _cmd_merge(args: argparse.Namespace) -> int:
    from medmerge.merge import MergeConfig, run_merge

    overrides = {
        "base": args.base,
        "adapters": args.adapter,
        "out": args.out,
        "method": args.method,
        "dtype": args.dtype,
        "export": args.export,
        "adapter_rank": args.adapter_rank,
        "density": args.density,
        "seed": args.seed,
        "force": args.force or None,
        "verify": False if args.no_verify else None,
        "allow_pickle": args.allow_pickle or None,
    }
    cfg = _stage_config(MergeConfig, args, overrides)
    return run_merge(cfg)


def _rank(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge LoRA adapters into the base with chosen weights")
    p.add_argument("--base", help="base model folder")
    p.add_argument(
        "--adapter", action="append", type=_adapter_weight, metavar="PATH=WEIGHT", help="repeatable"
    )
    p.add_argument("--out", help="output folder")
    p.add_argument(
        "--method", help="linear (default), ties, dare_linear, dare_ties, magnitude_prune"
    )
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--export", choices=["full", "adapter", "both"])
    p.add_argument("--adapter-rank", type=_rank, help="merged adapter rank: auto or an integer")
    p.add_argument("--density", type=float, help="kept fraction for ties/dare/magnitude_prune")
    p.add_argument("--seed", type=int, help="seed of dare's random drop mask")
    p.add_argument("--no-verify", action="store_true", help="skip the verification at the end")
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt checkpoints")
    _force_flag(p)
    p.add_argument(
        "--section", help="read the config from this section of the YAML file (e.g. merge)"
    )
    _add_common(p)
    p.set_defaults(func=_cmd_merge)


# ---------------------------------------------------------------- verify


def _cmd_verify(args: argparse.Namespace) -> int:
    from medmerge.verify import VerifyConfig, run_verify

    overrides = {
        "base": args.base,
        "merged": args.merged,
        "adapters": args.adapter,
        "method": args.method,
        "template": args.template,
        "enable_thinking": args.enable_thinking,
        "sample": args.sample,
        "logits": False if args.no_logits else None,
        "report": args.report,
        "allow_pickle": args.allow_pickle or None,
    }
    cfg = _stage_config(VerifyConfig, args, overrides)
    return run_verify(cfg)


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a merged checkpoint against base + adapters")
    p.add_argument("--base", help="base model folder")
    p.add_argument("--merged", help="merged model folder")
    p.add_argument(
        "--adapter",
        action="append",
        type=_adapter_weight,
        metavar="PATH=WEIGHT",
        help="intended adapters (default: the merged folder's manifest)",
    )
    p.add_argument("--method", help="merge method (default: the manifest's, else linear)")
    _template_flags(p, "template evaluation will use; checked against the adapters'")
    p.add_argument("--sample", type=int, help="check only N touched and N untouched tensors")
    p.add_argument(
        "--no-logits", action="store_true", help="skip the behaviour check (loads both models)"
    )
    p.add_argument("--report", help="verify.json path (default: <merged>/verify.json)")
    p.add_argument("--allow-pickle", action="store_true", help="allow .bin/.pt checkpoints")
    p.add_argument("--section", help="read the config from this section of the YAML file")
    _add_common(p)
    p.set_defaults(func=_cmd_verify)


# ---------------------------------------------------------------- eval / score


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model folder (a merged checkpoint or a base alone)")
    p.add_argument("--base", help="base model folder; with --adapter, merged in memory")
    p.add_argument(
        "--adapter", action="append", type=_adapter_weight, metavar="PATH=WEIGHT", help="repeatable"
    )
    p.add_argument("--method", help="merge method for --adapter (default linear)")
    p.add_argument("--backend", choices=["hf", "vllm"])
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    p.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int)
    _vllm_flags(p)
    _template_flags(p)
    p.add_argument(
        "--allow-template-mismatch",
        action="store_true",
        help="evaluate with another template than the adapters were trained with (warns, recorded)",
    )
    p.add_argument(
        "--allow-pickle", action="store_true", help="allow .bin/.pt model folders and adapters"
    )
    p.add_argument(
        "--allow-hub",
        action="store_true",
        help="a --model/--base that is not a local folder may be downloaded from the model hub",
    )
    p.add_argument("--limit", type=int, help="first N items only")
    p.add_argument("--out", help="results folder")
    _force_flag(p)


def _template_flags(
    p: argparse.ArgumentParser,
    template_help: str = "chat template: qwen3, qwen3_nothink, chatml, default",
) -> None:
    p.add_argument("--template", help=template_help)
    p.add_argument(
        "--enable-thinking",
        dest="enable_thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
    )


def _force_flag(p: argparse.ArgumentParser, what: str = "replace an existing --out") -> None:
    p.add_argument("--force", action="store_true", help=what)


def _vllm_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tensor-parallel-size", type=int, help="vllm: GPUs one model is split over (default 1)"
    )
    p.add_argument(
        "--gpu-memory-utilization", type=float, help="vllm: share of GPU memory (default 0.9)"
    )
    p.add_argument("--max-model-len", type=int, help="vllm: context length (default the model's)")


def _vllm_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
    }


def _model_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        **_vllm_overrides(args),
        "model": args.model,
        "base": args.base,
        "adapters": args.adapter,
        "method": args.method,
        "backend": args.backend,
        "device": args.device,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "template": args.template,
        "enable_thinking": args.enable_thinking,
        "allow_template_mismatch": args.allow_template_mismatch or None,
        "allow_pickle": args.allow_pickle or None,
        "allow_hub": args.allow_hub or None,
        "limit": args.limit,
        "out": args.out,
        "force": args.force or None,
    }


def _decoding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", choices=["A", "B", "C"], help="A greedy; B T=0.6 top_p=0.8; C T=1.0 top_p=0.95"
    )
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int)


def _decoding_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "decoding.preset": args.preset,
        "decoding.temperature": args.temperature,
        "decoding.top_p": args.top_p,
        "decoding.top_k": args.top_k,
        "decoding.max_new_tokens": args.max_new_tokens,
        "decoding.seed": args.seed,
    }


def _cmd_eval_gen(args: argparse.Namespace) -> int:
    from medmerge.eval import GenEvalConfig, run_gen_eval

    overrides = {
        **_model_overrides(args),
        **_decoding_overrides(args),
        "data": args.data,
        "format": args.format,
        "language": args.language,
    }
    cfg = _stage_config(GenEvalConfig, args, overrides)
    return run_gen_eval(cfg)


def _cmd_eval_mcq(args: argparse.Namespace) -> int:
    from medmerge.eval import McqEvalConfig, run_mcq_eval

    overrides = {
        **_model_overrides(args),
        "data": args.data,
        "format": args.format,
        "mode": args.mode,
        "continuation": args.continuation,
        "chat": False if args.no_chat else None,
        "language": args.language,
        "few_shot": args.few_shot,
        "few_shot_data": args.few_shot_data,
        "medmcqa_cop_base": args.medmcqa_cop_base,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
    }
    cfg = _stage_config(McqEvalConfig, args, overrides)
    return run_mcq_eval(cfg)


def _cmd_eval_safety(args: argparse.Namespace) -> int:
    from medmerge.eval import SafetyConfig, run_safety_eval

    models = [{"model": path} for path in args.model or []] or None
    overrides = {
        **_decoding_overrides(args),
        "models": models,
        "prompts": args.prompts,
        **_vllm_overrides(args),
        "backend": args.backend,
        "device": args.device,
        "template": args.template,
        "enable_thinking": args.enable_thinking,
        "allow_template_mismatch": args.allow_template_mismatch or None,
        "out": args.out,
        "force": args.force or None,
    }
    cfg = _stage_config(SafetyConfig, args, overrides)
    return run_safety_eval(cfg)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser("eval", help="evaluate a model or base + adapters (no export needed)")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)

    gen = eval_sub.add_parser(
        "gen", help="generate answers; BLEU-4, ROUGE, sacreBLEU, reasoning leaks"
    )
    gen.add_argument(
        "--data", help="Alpaca/ShareGPT, PubMedQA ori_pqal.json or JSON lines with prompt/reference"
    )
    gen.add_argument("--format", choices=["auto", "alpaca", "sharegpt", "pubmedqa", "columns"])
    gen.add_argument(
        "--language", choices=["auto", "en", "zh"], help="sacreBLEU tokenizer: 13a or zh"
    )
    _model_flags(gen)
    _decoding_flags(gen)
    gen.add_argument("--section", help="read the config from this section of the YAML file")
    _add_common(gen)
    gen.set_defaults(func=_cmd_eval_gen)

    mcq = eval_sub.add_parser(
        "mcq", help="multiple-choice accuracy (log-likelihood or generated letter)"
    )
    mcq.add_argument(
        "--data", nargs="+", help="files or folders (MedQA, MedMCQA, PubMedQA, MMLU, CMMLU, ...)"
    )
    mcq.add_argument(
        "--format",
        help="auto (default), medqa, medmcqa, pubmedqa, mmlu, mmlu_hf, cmmlu, cmexam, ceval, headqa, columns",
    )
    mcq.add_argument("--mode", choices=["loglik", "generate"])
    mcq.add_argument(
        "--continuation", choices=["letter", "text"], help="what loglik scores per option"
    )
    mcq.add_argument(
        "--no-chat", action="store_true", help="plain-text prompt, no chat template (loglik)"
    )
    mcq.add_argument("--language", choices=["auto", "en", "zh"])
    mcq.add_argument("--few-shot", type=int, help="exemplars per question (seeded)")
    mcq.add_argument(
        "--few-shot-data", nargs="+", help="exemplar pool (default: the other questions)"
    )
    mcq.add_argument(
        "--medmcqa-cop-base", type=int, choices=[0, 1], help="when the file cannot tell"
    )
    mcq.add_argument("--seed", type=int, help="few-shot sampling seed")
    mcq.add_argument("--max-new-tokens", type=int, help="generate mode")
    _model_flags(mcq)
    mcq.add_argument("--section", help="read the config from this section of the YAML file")
    _add_common(mcq)
    mcq.set_defaults(func=_cmd_eval_mcq)

    safety = eval_sub.add_parser(
        "safety", help="bundled safety prompts, answers side by side, referral rate"
    )
    safety.add_argument(
        "--model", action="append", help="model folder (repeatable; base + adapters via --config)"
    )
    safety.add_argument(
        "--prompts", help="JSON lines with id, category, language, prompt (default: bundled)"
    )
    safety.add_argument("--backend", choices=["hf", "vllm"])
    safety.add_argument("--device")
    _vllm_flags(safety)
    _template_flags(safety)
    safety.add_argument("--allow-template-mismatch", action="store_true")
    safety.add_argument("--out", help="results folder")
    _force_flag(safety)
    _decoding_flags(safety)
    safety.add_argument("--section", help="read the config from this section of the YAML file")
    _add_common(safety)
    safety.set_defaults(func=_cmd_eval_safety)


def _cmd_score(args: argparse.Namespace) -> int:
    from medmerge.eval import ScoreConfig, run_score

    overrides = {
        "predictions": args.predictions,
        "out": args.out,
        "prediction_key": args.prediction_key,
        "reference_key": args.reference_key,
        "language": args.language,
        "tokenizer": args.tokenizer,
        "force": args.force or None,
    }
    cfg = _stage_config(ScoreConfig, args, overrides)
    return run_score(cfg)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="generation and reasoning-leak metrics of a predictions file")
    p.add_argument("--predictions", help="JSON lines with prediction and reference")
    p.add_argument("--out", help="results folder")
    p.add_argument("--prediction-key", help="field of the model output (default prediction)")
    p.add_argument("--reference-key", help="field of the reference (default reference)")
    p.add_argument("--language", choices=["auto", "en", "zh"])
    p.add_argument("--tokenizer", help="tokenizer folder for token lengths")
    _force_flag(p)
    _add_common(p)
    p.set_defaults(func=_cmd_score)


# ---------------------------------------------------------------- sweep / diagnose / audit / report / run


def _cmd_sweep(args: argparse.Namespace) -> int:
    from medmerge.config import parse_set_overrides
    from medmerge.sweep import run_sweep
    from medmerge.sweep.config import build_sweep_config

    overrides = {
        **_vllm_overrides(args),
        "out": args.out,
        "backend": args.backend,
        "progress": False if args.no_progress else None,
        "force": args.force or None,
    }
    cfg = build_sweep_config(args.config_file, {**overrides, **parse_set_overrides(args.set)})
    return run_sweep(cfg)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="evaluate a grid of merge weights with the base loaded once")
    p.add_argument(
        "config_file", metavar="CONFIG.yaml", help="sweep config (see configs/sweep.yaml)"
    )
    p.add_argument("--out", help="sweep folder; finished points in it are skipped")
    p.add_argument(
        "--backend", choices=["hf", "vllm"], help="vllm: each point as one merged LoRA adapter"
    )
    _vllm_flags(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _force_flag(p, "discard the sweep folder's finished points and start over")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key")
    _add_common(p, config=False)
    p.set_defaults(func=_cmd_sweep)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from medmerge.sweep.diagnose import DiagnoseConfig, run_diagnose

    overrides = {"out": args.out, "force": args.force or None}
    cfg = _stage_config(DiagnoseConfig, args, overrides)
    return run_diagnose(cfg)


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="PT/SFT delta interference heatmaps and layer ablation")
    p.add_argument("--out", help="diagnostics folder")
    _force_flag(p)
    _add_common(p)
    p.set_defaults(func=_cmd_diagnose)


def _cmd_audit_leakage(args: argparse.Namespace) -> int:
    from medmerge.audit.leakage import AuditConfig, run_audit

    overrides = {
        "train": args.train,
        "eval": args.eval,
        "ngram": args.ngram,
        "threshold": args.threshold,
        "exclude": args.exclude,
        "out": args.out,
        "force": args.force or None,
    }
    cfg = _stage_config(AuditConfig, args, overrides)
    return run_audit(cfg)


def _add_audit(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser("audit", help="audits of the data around a run")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    p = audit_sub.add_parser("leakage", help="exact duplicates and n-gram overlap, train vs eval")
    p.add_argument("--train", nargs="+", metavar="FILE", help="training data files")
    p.add_argument("--eval", nargs="+", metavar="FILE", help="evaluation data files")
    p.add_argument("--ngram", type=int, help="n-gram length (default 13)")
    p.add_argument(
        "--threshold", type=float, help="flag items whose overlap exceeds this (default 0)"
    )
    p.add_argument(
        "--exclude", metavar="DIR", help="write decontaminated copies of the eval files here"
    )
    p.add_argument("--out", help="audit folder (leakage.json, items.jsonl)")
    _force_flag(p)
    _add_common(p)
    p.set_defaults(func=_cmd_audit_leakage)


def _cmd_report(args: argparse.Namespace) -> int:
    from medmerge.report.build import ReportConfig, build_report

    return build_report(ReportConfig(run_dir=args.run_dir, out=args.out, force=args.force))


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="report.md and a self-contained report.html of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a `medmerge run` folder")
    p.add_argument("--out", help="report folder (default RUN_DIR/report)")
    _force_flag(p, "replace an existing report folder (never the run folder or its stages)")
    _add_common(p, config=False)
    p.set_defaults(func=_cmd_report)


def _cmd_run(args: argparse.Namespace) -> int:
    from medmerge.pipeline import PipelineConfig, run_pipeline

    overrides = {"out": args.out}
    cfg = _stage_config(PipelineConfig, args, overrides, config_file=args.config_file)
    return run_pipeline(cfg)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole chain from one YAML; finished stages are reused")
    p.add_argument("config_file", metavar="PIPELINE.yaml", help="see configs/pipeline.yaml")
    p.add_argument("--out", help="run folder")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key")
    _add_common(p, config=False)
    p.set_defaults(func=_cmd_run)


# ---------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from medmerge.demo import run_demo

    return run_demo(args.out)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the bundled tiny model and sample data")
    p.add_argument("--out", default="runs/demo", help="run folder (reused across runs)")
    _add_common(p, config=False)
    p.set_defaults(func=_cmd_demo)


_REGISTRARS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_base,
    _add_train,
    _add_merge,
    _add_verify,
    _add_eval,
    _add_score,
    _add_sweep,
    _add_diagnose,
    _add_audit,
    _add_report,
    _add_run,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmerge",
        description="Train PT and SFT LoRA adapters, merge them exactly, verify and evaluate the merge.",
    )
    parser.add_argument("--version", action="version", version=f"medmerge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


# Failures that come from the machine or the file system, not from a bug: disk full, a size
# limit, a quota, a read-only or immutable folder, a name too long, a path through a file, a
# symlink loop, a device that is gone.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "free space (or raise the file-size limit) and rerun",
    errno.EFBIG: "free space (or raise the file-size limit) and rerun",
    errno.EDQUOT: "free space within your quota and rerun",
    errno.EROFS: "choose a writable location",
    errno.EACCES: "fix the permissions or choose another path",
    errno.EPERM: "fix the permissions (or the immutable flag) or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.ELOOP: "the path is a symlink loop; fix the link",
    errno.EIO: "the device reported an I/O error; check the disk",
    errno.ENOMEM: "free memory (or raise the memory limit) and rerun",
}


def _environment_error(exc: BaseException) -> str | None:
    """One line for a failure the machine caused (disk full, permissions, ...), else None.

    safetensors reports I/O failures as SafetensorError text ("... (os error 28)"), not OSError.
    """
    if isinstance(exc, MemoryError) or (
        isinstance(exc, ImportError | OSError) and "failed to map segment" in str(exc)
    ):  # a library that cannot even be mapped under a memory limit (ulimit -v)
        return "out of memory; free memory (or raise the memory limit), or use a smaller batch"
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        fix = _ENVIRONMENT_ERRNOS[exc.errno]
        return f"{where}{exc.strerror}; {fix} — nothing half-written was kept"
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Symlink loop from "):
        return (
            f"{text.removeprefix('Symlink loop from ')}: the path is a symlink loop; fix the link"
        )
    for code, fix in _ENVIRONMENT_ERRNOS.items():
        if f"(os error {code})" in text:
            return f"{os.strerror(code)} while writing; {fix} — nothing half-written was kept"
    if "alloc" in text.lower() and "memory" in text.lower() and isinstance(exc, RuntimeError):
        return f"out of memory ({text.splitlines()[0][:120]}); free memory or use a smaller batch"
    return None


def _save_traceback(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected error to a file the user can attach to a bug report."""
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("MEDMERGE_TRACEBACK_DIR") or tempfile.gettempdir())
    path = folder / f"medmerge-traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        path.write_text(f"medmerge {__version__}\nargv: {sys.argv}\n\n{text}", "utf-8")
    except OSError:
        return None
    return path


def _undecodable_argument(argv: Sequence[str]) -> str | None:
    """An argument holding bytes that are not UTF-8 (a path we could not name in a manifest)."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")
    return None


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


_STREAMING_COMMANDS = {"merge", "verify"}


def _idle_threads_sleep() -> None:
    """Let torch's idle OpenMP threads sleep instead of spinning (before torch is imported).

    merge and verify overlap torch arithmetic with reader, writer and hashing threads; spinning
    OpenMP workers took about a fifth of the CPU from those threads on 2 cores (perf, 1.8 B merge).
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _quiet_libraries(command: str) -> None:
    """Keep library chatter (load bars, deprecation notes) out of the user's terminal."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    if command in _STREAMING_COMMANDS and "transformers" not in sys.modules:
        # merge and verify rarely load transformers: say it through the environment it reads
        # on import instead of importing it (~0.5 s) only to set its verbosity.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = _undecodable_argument(argv)
    if bad is not None:
        print(
            f"medmerge: error: {bad}: argument is not valid UTF-8 (a byte that names no "
            "character); rename the file or folder",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    args = parser.parse_args(argv)
    if args.command in _STREAMING_COMMANDS:
        _idle_threads_sleep()
    _quiet_libraries(args.command)
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _dispatch(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; map every way it can end to one line and a documented exit code."""
    try:
        return int(args.func(args) or 0)
    except MedmergeError as exc:
        if args.debug:
            raise
        print(f"medmerge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(
            "medmerge: terminated; finished artifacts are untouched, rerun to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print(
            "medmerge: interrupted; finished artifacts are untouched, rerun to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        reason = _environment_error(exc)
        if reason is not None:
            print(f"medmerge: error: {reason}", file=sys.stderr)
            return EXIT_BAD_INPUT
        saved = _save_traceback(exc)
        where = f"; traceback saved to {saved}" if saved else ""
        first = (str(exc).splitlines() or [""])[0][:200]
        print(
            f"medmerge: internal error: {type(exc).__name__}: {first}{where} "
            "(rerun with --debug to print it; please report this)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
