"""The `medmerge` command: parse, build a stage config, call the stage. No logic here."""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from medmerge import __version__
from medmerge.cli_schema import Command, Flag, Table, example_epilog
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


# ---------------------------------------------------------------- the commands
#
# Each subcommand is one row: its schema and runner ("module:attr", imported only when the
# command runs) and the spellings that differ from the rule `--<field-name>`. Every other
# field with a scalar, choice or list type is a flag, typed, with the field's description.

_ADAPTERS = Flag(
    "adapters", "--adapter", type=_adapter_weight, action="append", metavar="PATH=WEIGHT"
)
_MODELS = Flag(
    "models", "--model", action="append", to_value=lambda paths: [{"model": p} for p in paths]
)
_EVAL = {"section": True, "spellings": (_ADAPTERS,)}


@functools.cache
def _demo_schema() -> type:
    from pydantic import Field

    from medmerge.config import StageConfig

    class DemoConfig(StageConfig):
        """`medmerge demo`: the pipeline on the bundled tiny model and sample data."""

        out: str = Field(default="runs/demo", description="run folder (reused across runs)")

    return DemoConfig


def _run_demo(cfg) -> int:
    from medmerge.demo import run_demo

    return run_demo(cfg.out)


COMMANDS: tuple[Command, ...] = (
    Command(
        ("base", "build"),
        "build the tiny Qwen3 base model and tokenizer",
        "medmerge base build --out runs/base --pretrain-steps 0",
        "medmerge.base.build:BaseBuildConfig",
        "medmerge.base.build:build_base",
        returns_status=False,
    ),
    *(
        Command(
            ("train", stage),
            what,
            f"medmerge train {stage} --base runs/base --data {data} --out runs/{stage}",
            "medmerge.train.config:TrainConfig",
            "medmerge.train:train",
            fixed=(("stage", stage),),
            builder="medmerge.train.llamafactory:build_train_config",
            returns_status=False,
        )
        for stage, what, data in (
            ("pt", "domain pretraining on raw text", "data/pt"),
            ("sft", "supervised fine-tuning", "data/sft_en"),
        )
    ),
    Command(
        ("encode",),
        "show what training sees: token ids, labels and trained spans per example or block",
        "medmerge encode --tokenizer runs/base --template qwen3 --data "
        "data/sft_en/genmedgpt_sample.json --out runs/encoded.jsonl",
        "medmerge.encode:EncodeConfig",
        "medmerge.encode:run_encode",
    ),
    Command(
        ("merge",),
        "merge LoRA adapters into the base with chosen weights",
        "medmerge merge --base runs/base --adapter runs/pt=0.3 --adapter runs/sft=0.7 "
        "--out runs/merged",
        "medmerge.merge.config:MergeConfig",
        "medmerge.merge.run:run_merge",
        **_EVAL,
    ),
    Command(
        ("verify",),
        "check a merged checkpoint against base + adapters",
        "medmerge verify --base runs/base --merged runs/merged",
        "medmerge.verify.config:VerifyConfig",
        "medmerge.verify.run:run_verify",
        **_EVAL,
    ),
    Command(
        ("eval", "gen"),
        "generate answers; BLEU-4, ROUGE, sacreBLEU, reasoning leaks",
        "medmerge eval gen --model runs/merged --data data/qa_en --out runs/eval_gen",
        "medmerge.eval.config:GenEvalConfig",
        "medmerge.eval.run:run_gen_eval",
        nested=("decoding",),
        **_EVAL,
    ),
    Command(
        ("eval", "mcq"),
        "multiple-choice accuracy (log-likelihood or generated letter)",
        "medmerge eval mcq --base runs/base --adapter runs/sft=1 --data data/mcq_en "
        "--out runs/eval_mcq",
        "medmerge.eval.config:McqEvalConfig",
        "medmerge.eval.run:run_mcq_eval",
        choices=(("format", lambda: ["auto", *_mcq_formats()]),),
        **_EVAL,
    ),
    Command(
        ("eval", "safety"),
        "bundled safety prompts, answers side by side, referral rate",
        "medmerge eval safety --model runs/base --model runs/merged --out runs/safety",
        "medmerge.eval.config:SafetyConfig",
        "medmerge.eval.run:run_safety_eval",
        nested=("decoding",),
        section=True,
        spellings=(_MODELS,),
    ),
    Command(
        ("score",),
        "generation and reasoning-leak metrics of a predictions file",
        "medmerge score --predictions preds.jsonl --out runs/score",
        "medmerge.eval.config:ScoreConfig",
        "medmerge.eval.run:run_score",
    ),
    Command(
        ("compare",),
        "paired tests of eval runs on shared items (McNemar, paired bootstrap, Holm)",
        "medmerge compare runs/eval_base runs/eval_merged --out runs/compare",
        "medmerge.eval.compare:CompareConfig",
        "medmerge.eval.compare:run_compare",
        positional=("runs",),
        config="none",
    ),
    Command(
        ("sweep",),
        "evaluate a grid of merge weights with the base loaded once",
        "medmerge sweep configs/sweep.yaml --out runs/sweep",
        "medmerge.sweep.config:SweepConfig",
        "medmerge.sweep.run:run_sweep",
        config="positional",
        config_help="sweep config (see configs/sweep.yaml)",
        builder="medmerge.sweep.config:build_sweep_config",
    ),
    Command(
        ("diagnose",),
        "PT/SFT delta interference heatmaps and layer ablation",
        "medmerge diagnose --config diagnose.yaml --out runs/diagnose",
        "medmerge.sweep.diagnose:DiagnoseConfig",
        "medmerge.sweep.diagnose:run_diagnose",
    ),
    Command(
        ("mechanism",),
        "layer-wise CKA/PCA/probes of the merge and interventions against random controls",
        "medmerge mechanism --config mechanism.yaml --out runs/mechanism",
        "medmerge.mechanism.config:MechanismConfig",
        "medmerge.mechanism.run:run_mechanism",
        exclude=("backend", "tensor_parallel_size", "gpu_memory_utilization", "max_model_len"),
    ),
    Command(
        ("audit", "leakage"),
        "exact duplicates and n-gram overlap, train vs eval",
        "medmerge audit leakage --train data/sft_en --eval data/qa_en --out runs/audit",
        "medmerge.audit.leakage:AuditConfig",
        "medmerge.audit.leakage:run_audit",
        spellings=(
            Flag("train", metavar="FILE"),
            Flag("eval", metavar="FILE"),
            Flag("exclude", metavar="DIR"),
        ),
    ),
    Command(
        ("report",),
        "report.md and a self-contained report.html of a run folder",
        "medmerge report runs/demo",
        "medmerge.report.build:ReportConfig",
        "medmerge.report.build:build_report",
        positional=("run_dir",),
        config="none",
    ),
    Command(
        ("run",),
        "the whole chain from one YAML; finished stages are reused",
        "medmerge run configs/pipeline.yaml --out runs/study",
        "medmerge.pipeline:PipelineConfig",
        "medmerge.pipeline:run_pipeline",
        config="positional",
        config_metavar="PIPELINE.yaml",
        config_help="see configs/pipeline.yaml",
    ),
    Command(
        ("demo",),
        "the whole pipeline on the bundled tiny model and sample data",
        "medmerge demo --out runs/demo",
        _demo_schema,
        "medmerge.cli:_run_demo",
        config="none",
    ),
)

GROUPS: dict[tuple[str, ...], tuple[str, str]] = {
    ("base",): ("the tiny default base model", "medmerge base build --out runs/base"),
    ("train",): (
        "train a LoRA adapter (pt: raw text, sft: QA pairs)",
        "medmerge train sft --base runs/base --data data/sft_en --out runs/sft",
    ),
    ("eval",): (
        "evaluate a model or base + adapters (no export needed)",
        "medmerge eval mcq --model runs/merged --data data/mcq_en --out runs/eval_mcq",
    ),
    ("audit",): (
        "audits of the data around a run",
        "medmerge audit leakage --train data/sft_en --eval data/qa_en --out runs/audit",
    ),
}


def _merge_methods():
    from medmerge.lora.methods import METHODS  # the merge-method registry

    return METHODS


def _templates():
    from medmerge.data.templates import TEMPLATES

    return TEMPLATES


def _mcq_formats():
    from medmerge.eval.mcq_formats import LOADERS

    return LOADERS


def _before_import(cmd: Command) -> None:
    """What main does after parsing, done first: a command's flags import its stage."""
    _quiet_libraries(cmd.path[0])


def _import_failed(exc: BaseException, debug: bool) -> None:
    """A stage that cannot even be imported to read its flags ends as its command would."""

    def fail(args: argparse.Namespace) -> int:
        raise exc

    sys.exit(_dispatch(argparse.Namespace(func=fail, debug=debug)))


TABLE = Table(
    COMMANDS,
    GROUPS,
    choices={"method": _merge_methods, "template": _templates},
    before_import=_before_import,
    on_import_error=_import_failed,
)


def build_parser(table: Table = TABLE) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medmerge",
        description="Train PT and SFT LoRA adapters, merge them exactly, verify and evaluate the merge.",
        epilog=example_epilog("medmerge demo --out runs/demo"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medmerge {__version__}")
    table.add_to(parser)
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
