"""`medmerge run PIPELINE.yaml`: base -> PT -> SFT -> merge -> verify -> eval -> sweep ->
audit -> diagnose -> report, each stage skipped when its record shows the same inputs.

A stage's record (`<out>/.pipeline/<stage>.json`) holds its resolved config and the
manifest hashes of the artifacts it read; when both match and its artifact is complete
the stage is reused, so a rerun after a crash carries on where it stopped, and a stage
whose upstream was rebuilt runs again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from medmerge.audit.leakage import AuditConfig, run_audit
from medmerge.base import BaseBuildConfig, build_base
from medmerge.config import StageConfig, build_config
from medmerge.manifest import MANIFEST_NAME, sha256_file, write_manifest
from medmerge.merge import MergeConfig, run_merge
from medmerge.report.build import ReportConfig, build_report
from medmerge.sweep import SweepConfig, run_sweep
from medmerge.sweep.config import build_sweep_config
from medmerge.sweep.diagnose import Ablation, DiagnoseConfig, run_diagnose
from medmerge.sweep.run import evaluate_checkpoint
from medmerge.train import TrainConfig, train
from medmerge.verify import VerifyConfig, run_verify

STAGES = ("base", "pt", "sft", "merge", "verify", "eval", "sweep", "audit", "diagnose", "report")
_RUN_ONLY_KEYS = ("force", "progress")  # how a stage ran, not what it made


class PipelineConfig(StageConfig):
    """The chain's per-stage YAML files, the merge weights and the run folder."""

    path_fields = ("out", "base", "pt", "sft", "merge", "verify", "sweep")

    out: str
    base: str
    pt: str
    sft: str
    merge: str
    verify: str
    sweep: str
    weights: dict[str, float] = Field(default_factory=lambda: {"pt": 0.3, "sft": 0.7})
    audit_ngram: int = Field(default=13, ge=1)
    ablation_ranges: list[list[int]] | None = None  # default: each layer alone
    stages: list[str] = Field(default_factory=lambda: list(STAGES))
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # stage -> {key: value}


class EvalStageConfig(StageConfig):
    """The eval stage: the exported merged checkpoint on the sweep's suites."""

    model: str
    sweep: dict[str, Any]
    out: str
    force: bool = False


@dataclass
class Stage:
    name: str
    cfg: StageConfig
    run: Callable[[Any], object]
    artifact: Path  # a folder with a manifest, or a file, that exists only when complete
    upstream: list[str] = field(default_factory=list)


def _artifact_done(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() if path.suffix == "" else path.is_file()


def _fingerprint(path: Path) -> str | None:
    target = path / MANIFEST_NAME if path.suffix == "" else path
    return sha256_file(target) if target.is_file() else None


def _record(stage: Stage, stages: dict[str, Stage]) -> dict[str, Any]:
    return {
        "config": stage.cfg.model_dump(
            exclude=set(_RUN_ONLY_KEYS) & set(type(stage.cfg).model_fields)
        ),
        "upstream": {n: _fingerprint(stages[n].artifact) for n in stage.upstream},
    }


def _run_stage(stage: Stage, stages: dict[str, Stage], records: Path) -> None:
    record_path = records / f"{stage.name}.json"
    wanted = _record(stage, stages)
    recorded = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else None
    done = _artifact_done(stage.artifact)
    if done and recorded == json.loads(json.dumps(wanted, default=str)):
        print(f"[{stage.name}] reusing {stage.artifact} (same inputs)")
        record_path.write_text(json.dumps(wanted, indent=1, default=str), "utf-8")
        return
    started = time.perf_counter()
    print(f"[{stage.name}] -> {stage.artifact}")
    record_path.unlink(missing_ok=True)
    update = {"force": True} if "force" in type(stage.cfg).model_fields else {}
    status = stage.run(stage.cfg.model_copy(update=update))
    if isinstance(status, int) and status != 0:
        raise SystemExit(status)
    record_path.write_text(json.dumps(wanted, indent=1, default=str), "utf-8")
    print(f"[{stage.name}] done in {time.perf_counter() - started:.0f} s")


def _run_eval(cfg: EvalStageConfig) -> int:
    from medmerge.artifacts import staged_output

    sweep = SweepConfig(**cfg.sweep)
    rows = evaluate_checkpoint(cfg.model, sweep)
    with staged_output(cfg.out, force=True) as folder:
        (folder / "results.json").write_text(
            json.dumps({"model": cfg.model, "rows": rows}, indent=2, default=str) + "\n", "utf-8"
        )
        write_manifest(folder, "eval", {"config": cfg.model_dump()})
    return 0


# Stage runners by name; tests replace one to simulate a crash.
RUNNERS: dict[str, Callable[[Any], object]] = {
    "base": build_base,
    "pt": train,
    "sft": train,
    "merge": run_merge,
    "verify": run_verify,
    "eval": _run_eval,
    "sweep": run_sweep,
    "audit": run_audit,
    "diagnose": run_diagnose,
    "report": build_report,
}


def _section(cfg: PipelineConfig, name: str, schema: type, file: str, values: dict) -> Any:
    return build_config(schema, file, {**values, **cfg.overrides.get(name, {})})


def plan_stages(cfg: PipelineConfig) -> dict[str, Stage]:
    """Every stage's resolved config, reading the per-stage YAML files."""
    root = Path(cfg.out).resolve()
    d = {
        n: str(root / n)
        for n in ("base", "pt", "sft", "merged", "eval", "sweep", "audit", "diagnostics", "report")
    }
    base = _section(cfg, "base", BaseBuildConfig, cfg.base, {"out": d["base"]})
    pt = _section(cfg, "pt", TrainConfig, cfg.pt, {"base": d["base"], "out": d["pt"]})
    sft = _section(cfg, "sft", TrainConfig, cfg.sft, {"base": d["base"], "out": d["sft"]})
    adapters = [
        {"path": d["pt"], "weight": cfg.weights["pt"]},
        {"path": d["sft"], "weight": cfg.weights["sft"]},
    ]
    merge = _section(
        cfg,
        "merge",
        MergeConfig,
        cfg.merge,
        {"base": d["base"], "adapters": adapters, "out": d["merged"]},
    )
    verify = _section(
        cfg, "verify", VerifyConfig, cfg.verify, {"base": d["base"], "merged": d["merged"]}
    )
    labelled = [{"path": d["pt"], "label": "pt"}, {"path": d["sft"], "label": "sft"}]
    sweep = build_sweep_config(
        cfg.sweep,
        {
            "base": d["base"],
            "adapters": labelled,
            "out": d["sweep"],
            **cfg.overrides.get("sweep", {}),
        },
    )
    evaluation = EvalStageConfig(model=d["merged"], sweep=sweep.model_dump(), out=d["eval"])
    audit = AuditConfig(
        train=_data_files(pt) + _data_files(sft),
        eval=_eval_files(sweep),
        ngram=cfg.audit_ngram,
        out=d["audit"],
    )
    first_gen = sweep.suites.gen[0] if sweep.suites.gen else None
    ablation = (
        None
        if first_gen is None
        else Ablation(
            weights=[cfg.weights["pt"], cfg.weights["sft"]],
            suite=first_gen,
            template=sweep.templates[0],
            decoding=next(iter(sweep.decodings.values())),
            ranges=cfg.ablation_ranges,
        )
    )
    diagnose = DiagnoseConfig(
        base=d["base"],
        adapters=labelled,
        ablation=ablation,
        out=d["diagnostics"],
        device=sweep.device,
    )
    report = ReportConfig(run_dir=str(root), out=d["report"])
    stages = [
        Stage("base", base, RUNNERS["base"], Path(d["base"])),
        Stage("pt", pt, RUNNERS["pt"], Path(d["pt"]), ["base"]),
        Stage("sft", sft, RUNNERS["sft"], Path(d["sft"]), ["base"]),
        Stage("merge", merge, RUNNERS["merge"], Path(d["merged"]), ["base", "pt", "sft"]),
        Stage("verify", verify, RUNNERS["verify"], Path(d["merged"]) / "verify.json", ["merge"]),
        Stage("eval", evaluation, RUNNERS["eval"], Path(d["eval"]), ["merge"]),
        Stage("sweep", sweep, RUNNERS["sweep"], Path(d["sweep"]), ["base", "pt", "sft"]),
        Stage("audit", audit, RUNNERS["audit"], Path(d["audit"])),
        Stage(
            "diagnose", diagnose, RUNNERS["diagnose"], Path(d["diagnostics"]), ["base", "pt", "sft"]
        ),
        Stage(
            "report",
            report,
            RUNNERS["report"],
            Path(d["report"]) / "report.html",
            ["verify", "eval", "sweep", "audit", "diagnose"],
        ),
    ]
    return {s.name: s for s in stages}


def _data_files(cfg: TrainConfig) -> list[str]:
    return [entry if isinstance(entry, str) else entry.path for entry in cfg.data]


def _eval_files(sweep: SweepConfig) -> list[str]:
    files = [s.data for s in sweep.suites.gen]
    files += [f for s in sweep.suites.mcq for f in s.data]
    return list(dict.fromkeys(files))


def run_pipeline(cfg: PipelineConfig) -> int:
    started = time.perf_counter()
    stages = plan_stages(cfg)
    records = Path(cfg.out).resolve() / ".pipeline"
    records.mkdir(parents=True, exist_ok=True)
    for name in STAGES:
        if name in cfg.stages:
            _run_stage(stages[name], stages, records)
    print(
        f"\npipeline finished in {time.perf_counter() - started:.0f} s; run folder "
        f"{Path(cfg.out).resolve()}"
    )
    if "report" in cfg.stages:
        print(f"report: {stages['report'].artifact}")
    return 0
