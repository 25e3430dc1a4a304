"""`medmerge run PIPELINE.yaml`: base -> PT -> SFT -> merge -> verify -> eval -> sweep ->
headline -> mistakes -> audit -> diagnose -> mechanism -> report, each stage skipped when its
record shows the same inputs (headline and mistakes only when the YAML asks for them).

A stage's record (`<out>/.pipeline/<stage>.json`) holds its resolved config, the manifest
hashes of the artifacts it read and the content hashes of the data files it read; when all
match and its artifact is complete the stage is reused, so a rerun after a crash carries on
where it stopped, and a stage whose upstream was rebuilt or whose data changed runs again.
A stage folder the pipeline did not make (a user's own base/) is never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field

from medmerge.artifacts import atomic_write_json, guard_inputs, output_lock
from medmerge.audit.leakage import AuditConfig, run_audit
from medmerge.base import BaseBuildConfig, build_base
from medmerge.config import StageConfig, build_config
from medmerge.errors import DataError, MedmergeError
from medmerge.eval.backends import Backend
from medmerge.eval.config import EngineSettings
from medmerge.eval.stage import EvalStageConfig, run_eval_stage
from medmerge.manifest import MANIFEST_NAME, sha256_file, sha256_json
from medmerge.mechanism.config import MechanismConfig
from medmerge.mechanism.run import run_mechanism
from medmerge.merge import MergeConfig, run_merge
from medmerge.paths import sample_data_dir
from medmerge.report.build import ReportConfig, build_report
from medmerge.run_layout import RunLayout
from medmerge.sweep import SweepConfig, run_sweep
from medmerge.sweep.config import GenSuite, build_sweep_config
from medmerge.sweep.diagnose import Ablation, DiagnoseConfig, run_diagnose
from medmerge.sweep.headline import HeadlineConfig, run_headline
from medmerge.sweep.mistakes import MistakesConfig, run_mistakes
from medmerge.sweep.run import checkpoint_rows, data_digest, sweep_folder_problem
from medmerge.train import TrainConfig, train
from medmerge.train.checkpoint import partial_dir
from medmerge.verify import VerifyConfig, run_verify

STAGES = (
    *("base", "pt", "sft", "merge", "verify", "eval", "sweep", "headline", "mistakes"),
    *("audit", "diagnose", "mechanism", "report"),
)
_RUN_ONLY_KEYS = ("force", "progress")  # how a stage ran, not what it made
# The manifest `stage` (and train_stage) of the folder each stage writes; verify writes into
# the merge's folder. A folder there with another manifest, or none, is the user's.
_MADE_BY = {
    "base": ("base", None),
    "pt": ("train", "pt"),
    "sft": ("train", "sft"),
    "merge": ("merge", None),
    "verify": ("merge", None),
    "eval": ("eval", None),
    "headline": ("headline", None),
    "mistakes": ("mistakes", None),
    "audit": ("audit-leakage", None),
    "diagnose": ("diagnose", None),
    "mechanism": ("mechanism", None),
    "report": ("report", None),
}
# What `medmerge base build` reads of its data folder (base/corpus.py).
_BASE_CORPUS = (
    "pt/medical_abstracts.csv",
    "pt/huatuo_zh_text.jsonl",
    "qa_en/pubmedqa_pqal_sample.json",
    "sft_en/genmedgpt_sample.json",
    "mcq_en/dev_HEAD_EN.json",
    "mcq_zh/cmmlu_medical_dev",
)


class StageFailed(MedmergeError):
    """A stage ended with a non-zero status (verify found a WRONG merge: 1); the run stops."""

    def __init__(self, stage: str, status: int) -> None:
        super().__init__(
            f"stage {stage} failed (exit status {status}; its output above says why); the "
            "stages before it are kept — fix the cause and rerun `medmerge run` to carry on"
        )
        self.exit_code = status


class PipelineConfig(StageConfig):
    """The chain's per-stage YAML files, the merge weights and the run folder."""

    path_fields = ("out", "base", "pt", "sft", "merge", "verify", "sweep")

    out: str = Field(description="run folder")
    base: str = Field(description="the base stage's YAML")
    pt: str = Field(description="the PT training stage's YAML")
    sft: str = Field(description="the SFT training stage's YAML")
    merge: str = Field(description="the merge stage's YAML")
    verify: str = Field(description="the verify stage's YAML")
    sweep: str = Field(description="the sweep stage's YAML (its suites are also the eval stage's)")
    weights: dict[str, float] = Field(default_factory=lambda: {"pt": 0.3, "sft": 0.7})
    audit_ngram: int = Field(default=13, ge=1, description="n-gram length of the leakage audit")
    ablation_ranges: list[list[int]] | None = None  # default: each layer alone
    # SFT-only vs the merge vs PT-only on the sweep's first suites: {decodings: {name: {preset,
    # max_new_tokens, seeds, description}}}; absent: no headline stage
    headline: dict[str, Any] | None = None
    # the broken merges made on purpose and checked ({later_point, wrong_template}); absent: none
    mistakes: dict[str, Any] | None = None
    # the diagnose ablation's and the mechanism stage's prompts: the first N of the generation
    # suite (they generate several times per prompt: once per layer range, or for the probes,
    # each intervention and its random controls); None: all
    analysis_prompts: int | None = Field(
        default=None,
        ge=10,
        description="the diagnose ablation and mechanism stage use the first N prompts (default: all)",
    )
    stages: list[str] = Field(
        default_factory=lambda: list(STAGES), description="the stages to run, in order"
    )
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # stage -> {key: value}


@dataclass
class Stage:
    name: str
    cfg: StageConfig
    run: Callable[[Any], object]
    artifact: Path  # a folder with a manifest, or a file, that exists only when complete
    upstream: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)  # data files (or folders) the stage reads

    @property
    def folder(self) -> Path:
        return self.artifact if self.artifact.suffix == "" else self.artifact.parent


def _artifact_done(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() if path.suffix == "" else path.is_file()


def _fingerprint(stage: Stage, records: Path) -> dict[str, str | None]:
    """An upstream artifact's manifest hash and the hash of the inputs its record holds.

    The record's hash carries a changed data file down the chain even when the rebuilt
    upstream's manifest happens to come out byte-identical.
    """
    target = stage.artifact / MANIFEST_NAME if stage.artifact.suffix == "" else stage.artifact
    record = _read_json(records / f"{stage.name}.json")
    return {
        "manifest": sha256_file(target) if target.is_file() else None,
        "record": None if record is None else sha256_json(record),
    }


def _record(stage: Stage, stages: dict[str, Stage], records: Path, digests: dict) -> dict:
    for path in stage.data:
        if path not in digests:
            digests[path] = data_digest(path)  # each file hashed once per run
    return {
        "config": stage.cfg.model_dump(
            exclude=set(_RUN_ONLY_KEYS) & set(type(stage.cfg).model_fields)
        ),
        "upstream": {n: _fingerprint(stages[n], records) for n in stage.upstream},
        "data": {path: digests[path] for path in stage.data},
    }


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None  # absent, or not a record this pipeline wrote whole: the stage reruns


def _foreign(stage: Stage) -> str | None:
    """Why the stage's folder is not one this pipeline made (None: absent, empty or ours)."""
    folder = stage.folder
    if stage.name == "sweep":
        return sweep_folder_problem(folder)
    if not os.path.lexists(folder):
        return None
    if not folder.is_dir():
        return "it is a file"
    if not any(folder.iterdir()):
        return None
    manifest = _read_json(folder / MANIFEST_NAME)
    if not isinstance(manifest, dict):
        return "it has no medmerge manifest"
    made_by, train_stage = _MADE_BY[stage.name]
    if manifest.get("stage") != made_by or manifest.get("train_stage", None) != train_stage:
        return f"its medmerge manifest is of stage {manifest.get('stage')!r}"
    return None


def _refuse_foreign(stage: Stage, inputs: list[str]) -> None:
    guard_inputs(stage.folder, inputs)
    problem = _foreign(stage)
    if problem:
        raise MedmergeError(
            f"{stage.folder}: this {stage.name} stage folder was not made by `medmerge run` "
            f"({problem}); it was left as it is — move it away or choose another run folder, "
            f"or leave {stage.name} out of `stages` to use what is there"
        )


def _run_stage(
    stage: Stage, stages: dict[str, Stage], records: Path, digests: dict[str, str | None]
) -> None:
    """Reuse the stage when its record shows the same inputs, else run it and record them."""
    record_path = records / f"{stage.name}.json"
    pending_path = records / f"{stage.name}.pending.json"
    wanted = json.loads(json.dumps(_record(stage, stages, records, digests), default=str))
    done = _artifact_done(stage.artifact)
    if done and _read_json(record_path) == wanted:
        print(f"[{stage.name}] reusing {stage.artifact} (same inputs)")
        return
    started = time.perf_counter()
    print(f"[{stage.name}] -> {stage.artifact}")
    record_path.unlink(missing_ok=True)
    _discard_stale_partial(stage, _read_json(pending_path), wanted)
    atomic_write_json(pending_path, wanted)
    update = {}
    if "force" in type(stage.cfg).model_fields and stage.name != "sweep":
        # replace only what this pipeline made before (checked); a sweep resumes instead
        update["force"] = os.path.lexists(stage.folder) and any(stage.folder.iterdir())
    status = stage.run(stage.cfg.model_copy(update=update))
    if isinstance(status, int) and status != 0:
        raise StageFailed(stage.name, status)
    atomic_write_json(record_path, wanted)
    pending_path.unlink(missing_ok=True)
    print(f"[{stage.name}] done in {time.perf_counter() - started:.0f} s")


def _discard_stale_partial(stage: Stage, pending: Any, wanted: dict) -> None:
    """Drop a training checkpoint this pipeline began with other inputs (a data file edited).

    Training resumes a `.partial` whose config matches; its data files' content is not in
    that check, so after an edit it would carry on from steps trained on the old content.
    """
    if stage.name in ("pt", "sft") and pending is not None and pending != wanted:
        shutil.rmtree(partial_dir(stage.artifact), ignore_errors=True)


def _sweep_rows(backend: Backend, suites: dict[str, Any]) -> list[dict[str, Any]]:
    """The eval stage's rows: the sweep table's columns, so the two can be compared."""
    return checkpoint_rows(backend, SweepConfig(**suites))


# Stage runners by name; tests replace one to simulate a crash.
RUNNERS: dict[str, Callable[[Any], object]] = {
    "base": build_base,
    "pt": train,
    "sft": train,
    "merge": run_merge,
    "verify": run_verify,
    "eval": partial(run_eval_stage, rows_of=_sweep_rows),
    "sweep": run_sweep,
    "headline": run_headline,
    "mistakes": run_mistakes,
    "audit": run_audit,
    "diagnose": run_diagnose,
    "mechanism": run_mechanism,
    "report": build_report,
}


def _section(cfg: PipelineConfig, name: str, schema: type, file: str, values: dict) -> Any:
    return build_config(schema, file, {**values, **cfg.overrides.get(name, {})})


def plan_stages(cfg: PipelineConfig) -> dict[str, Stage]:
    """Every stage's resolved config, reading the per-stage YAML files."""
    layout = RunLayout.of(cfg.out)
    d = {name: str(layout.folder(name)) for name in STAGES}
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
        {"base": d["base"], "adapters": adapters, "out": d["merge"]},
    )
    verify = _section(
        cfg, "verify", VerifyConfig, cfg.verify, {"base": d["base"], "merged": d["merge"]}
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
    evaluation = EvalStageConfig(
        model=d["merge"],
        engine=EngineSettings(**sweep.model_dump(include=set(EngineSettings.model_fields))),
        suites=sweep.model_dump(),
        data=sweep.data_files(),
        out=d["eval"],
    )
    audit = AuditConfig(
        train=_data_files(pt) + _data_files(sft),
        eval=sweep.data_files(),
        ngram=cfg.audit_ngram,
        out=d["audit"],
    )
    first_gen = sweep.suites.gen[0] if sweep.suites.gen else None
    ablation = (
        None
        if first_gen is None
        else Ablation(
            weights=[cfg.weights["pt"], cfg.weights["sft"]],
            suite=_first(first_gen, cfg.analysis_prompts),
            template=sweep.templates[0],
            decoding=next(iter(sweep.decodings.values())),
            ranges=cfg.ablation_ranges,
        )
    )
    diagnose = DiagnoseConfig(
        base=d["base"],
        adapters=labelled,
        ablation=ablation,
        out=d["diagnose"],
        **_engine_of(sweep),
    )
    mechanism = _mechanism_config(cfg, sweep, labelled, d)
    headline = _headline_config(cfg, sweep, labelled, d)
    mistakes = _mistakes_config(cfg, sweep, labelled, d)
    report = ReportConfig(run_dir=str(layout.root), out=d["report"])
    suites = sweep.data_files()
    stages = [
        Stage("base", base, RUNNERS["base"], Path(d["base"]), data=_base_data(base)),
        Stage("pt", pt, RUNNERS["pt"], Path(d["pt"]), ["base"], _data_files(pt)),
        Stage("sft", sft, RUNNERS["sft"], Path(d["sft"]), ["base"], _data_files(sft)),
        Stage("merge", merge, RUNNERS["merge"], Path(d["merge"]), ["base", "pt", "sft"]),
        Stage("verify", verify, RUNNERS["verify"], layout.verify_report, ["merge"]),
        Stage("eval", evaluation, RUNNERS["eval"], Path(d["eval"]), ["merge"], suites),
        Stage("sweep", sweep, RUNNERS["sweep"], Path(d["sweep"]), ["base", "pt", "sft"], suites),
        *(
            [
                Stage(
                    "headline",
                    headline,
                    RUNNERS["headline"],
                    Path(d["headline"]),
                    ["base", "pt", "sft"],
                    suites,
                )
            ]
            if headline
            else []
        ),
        *(
            [
                Stage(
                    "mistakes",
                    mistakes,
                    RUNNERS["mistakes"],
                    Path(d["mistakes"]),
                    ["base", "pt", "sft", "merge"],
                    suites,
                )
            ]
            if mistakes
            else []
        ),
        Stage("audit", audit, RUNNERS["audit"], Path(d["audit"]), data=audit.train + audit.eval),
        Stage(
            "diagnose",
            diagnose,
            RUNNERS["diagnose"],
            Path(d["diagnose"]),
            ["base", "pt", "sft"],
            ablation.suite.files() if ablation else [],
        ),
        *(
            [
                Stage(
                    "mechanism",
                    mechanism,
                    RUNNERS["mechanism"],
                    Path(d["mechanism"]),
                    ["base", "pt", "sft"],
                    mechanism.prompts.files() + (mechanism.mcq.files() if mechanism.mcq else []),
                )
            ]
            if mechanism
            else []
        ),
        # the report reads every stage's folder
        Stage("report", report, RUNNERS["report"], layout.report_html, [*STAGES[:-1]]),
    ]
    return {s.name: s for s in stages}


def _base_data(cfg: BaseBuildConfig) -> list[str]:
    try:
        folder = Path(cfg.data_dir) if cfg.data_dir else sample_data_dir()
    except DataError:
        return []  # no bundled data here: the base stage itself says so when it runs
    return [str(folder / name) for name in _BASE_CORPUS]


def _data_files(cfg: TrainConfig) -> list[str]:
    return [entry if isinstance(entry, str) else entry.path for entry in cfg.data]


def _external_inputs(cfg: PipelineConfig, stages: dict[str, Stage]) -> list[str]:
    """The files the run reads but does not make: its YAML files and every data file."""
    files = [cfg.base, cfg.pt, cfg.sft, cfg.merge, cfg.verify, cfg.sweep]
    return list(dict.fromkeys([*files, *(f for s in stages.values() for f in s.data)]))


def _mechanism_config(
    cfg: PipelineConfig, sweep: SweepConfig, labelled: list[dict], d: dict[str, str]
) -> MechanismConfig | None:
    """The mechanism stage on the sweep's first suites and template, on the transformers
    backend whatever the sweep's (its hooks need the model); None without a generation suite."""
    if not sweep.suites.gen:
        return None
    return MechanismConfig(
        base=d["base"],
        adapters=labelled,
        weights=[cfg.weights["pt"], cfg.weights["sft"]],
        prompts=_first(sweep.suites.gen[0], cfg.analysis_prompts),
        mcq=sweep.suites.mcq[0] if sweep.suites.mcq else None,
        template=sweep.templates[0],
        decoding=next(iter(sweep.decodings.values())),
        device=sweep.device,
        out=d["mechanism"],
    )


def _first(suite: GenSuite, count: int | None) -> GenSuite:
    if count is None or (suite.limit is not None and suite.limit <= count):
        return suite
    return suite.model_copy(update={"limit": count})


def _first_suites(sweep: SweepConfig) -> dict[str, Any]:
    return {
        "gen": sweep.suites.gen[0],
        "mcq": sweep.suites.mcq[0] if sweep.suites.mcq else None,
        "template": sweep.templates[0],
    }


def _headline_config(
    cfg: PipelineConfig, sweep: SweepConfig, labelled: list[dict], d: dict[str, str]
) -> HeadlineConfig | None:
    """SFT-only, the exported merge's weights and PT-only on the sweep's first suites."""
    if cfg.headline is None or not sweep.suites.gen:
        return None
    pt, sft = cfg.weights["pt"], cfg.weights["sft"]
    models = [
        {"key": "sft", "label": "SFT-only", "weights": [0.0, 1.0]},
        {"key": "merged", "label": f"merged PT {pt:g} / SFT {sft:g}", "weights": [pt, sft]},
        {"key": "pt", "label": "PT-only", "weights": [1.0, 0.0]},
    ]
    return HeadlineConfig(
        base=d["base"],
        adapters=labelled,
        models=models,
        **_first_suites(sweep),
        **{**cfg.headline, **cfg.overrides.get("headline", {})},
        **_engine_of(sweep),
        out=d["headline"],
    )


def _mistakes_config(
    cfg: PipelineConfig, sweep: SweepConfig, labelled: list[dict], d: dict[str, str]
) -> MistakesConfig | None:
    if cfg.mistakes is None or not sweep.suites.gen:
        return None
    return MistakesConfig(
        base=d["base"],
        adapters=labelled,
        weights=[cfg.weights["pt"], cfg.weights["sft"]],
        merged=d["merge"],
        **_first_suites(sweep),
        decoding=next(iter(sweep.decodings.values())),
        **{**cfg.mistakes, **cfg.overrides.get("mistakes", {})},
        **_engine_of(sweep),
        out=d["mistakes"],
    )


def _engine_of(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep's engine (backend, device, vLLM settings) for the diagnose stage's ablation;
    diagnose keeps its own dtype and batch size."""
    shared = set(EngineSettings.model_fields) & set(type(sweep).model_fields)
    return sweep.model_dump(include=shared - {"dtype", "batch_size"})


def run_pipeline(cfg: PipelineConfig) -> int:
    started = time.perf_counter()
    stages = plan_stages(cfg)
    inputs = _external_inputs(cfg, stages)
    chosen = [stages[name] for name in STAGES if name in cfg.stages and name in stages]
    for stage in chosen:  # all refused before any stage runs, and each again just before it
        _refuse_foreign(stage, inputs)
    records = RunLayout.of(cfg.out).records
    try:
        records.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedmergeError(
            f"{cfg.out}: cannot use it as the run folder ({exc.strerror or exc}); choose a "
            "writable folder for `out`"
        ) from None
    digests: dict[str, str | None] = {}
    with output_lock(cfg.out):  # a second `run` on this folder is refused, not interleaved
        for stage in chosen:
            _refuse_foreign(stage, inputs)
            _run_stage(stage, stages, records, digests)
    print(
        f"\npipeline finished in {time.perf_counter() - started:.0f} s; run folder "
        f"{Path(cfg.out).resolve()}"
    )
    if "report" in cfg.stages:
        print(f"report: {stages['report'].artifact}")
    return 0
