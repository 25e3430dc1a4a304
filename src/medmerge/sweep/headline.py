"""The pipeline's headline stage: SFT-only, the exported merge's weights and PT-only side by
side, every metric with its 95 % CI and each difference from SFT-only with its paired test.

One base load; each model is the base with a weight point merged in memory, as the sweep
does, so the merge row equals the sweep's point. Greedy decoding once, a sampled decoding
over several seeds; multiple choice once per model (it does not depend on decoding). All
tests of the table are one Holm family. headline.json is what the report's first screen and
the terminal table show; `findings` says in words which differences the data resolve.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.checkpoints import Checkpoint
from medmerge.config import StageConfig
from medmerge.eval.backends import load_backend
from medmerge.eval.config import ModelSpec
from medmerge.eval.session import template_check
from medmerge.lora import check_shapes, load_adapter
from medmerge.manifest import write_manifest
from medmerge.progress import progress_bar
from medmerge.sweep.config import DecodingChoice
from medmerge.sweep.evaluate import load_gen_suite, load_mcq_suite
from medmerge.sweep.itemwise import (
    GEN_METRICS,
    MCQ_METRICS,
    Measured,
    SuiteStageConfig,
    difference,
    holm_adjust,
    measure_gen,
    measure_mcq,
    merge_measured,
    paired_record,
)

CAVEAT = (
    "A constructed miniature: a tiny model built and trained on this machine from the bundled "
    "data so that each ingredient of the effect is present (docs/demo.md). It demonstrates the "
    "measurement; it is not evidence about real models."
)


class HeadlineModel(StageConfig):
    key: str
    label: str
    weights: list[float]  # one per adapter, in the adapters' order


class HeadlineDecoding(DecodingChoice):
    seeds: int = Field(default=1, ge=1, description="repeat a sampled decoding with K seeds")
    description: str = ""


class HeadlineConfig(SuiteStageConfig):
    models: list[HeadlineModel] = Field(min_length=2)  # the first is the reference
    decodings: dict[str, HeadlineDecoding]
    caveat: str = CAVEAT


def _cells(cfg: HeadlineConfig) -> int:
    per_model = sum(d.seeds for d in cfg.decodings.values()) + (1 if cfg.mcq else 0)
    return per_model * len(cfg.models)


def measure_models(cfg: HeadlineConfig) -> dict[str, dict[str, Measured]]:
    """model key -> decoding name -> Measured (each decoding's gen metrics plus the MCQ's)."""
    adapters = [load_adapter(a.path, cfg.allow_pickle) for a in cfg.adapters]
    check_shapes(adapters, Checkpoint(cfg.base))
    choice = cfg.template
    template_check(
        ModelSpec(base=cfg.base), adapters, choice.template, choice.enable_thinking, False
    )
    gen = load_gen_suite(cfg.gen)
    mcq = load_mcq_suite(cfg.mcq) if cfg.mcq else None
    backend = load_backend(ModelSpec(base=cfg.base), cfg, adapters)
    measured: dict[str, dict[str, Measured]] = {}
    with progress_bar(_cells(cfg), "headline", enabled=cfg.progress) as bar:
        for model in cfg.models:
            with backend.merged(tuple(model.weights)):
                choices = None
                if mcq is not None:
                    choices = measure_mcq(backend, mcq, choice, cfg.mcq.continuation)
                    bar.advance(1)
                measured[model.key] = {}
                for name, decoding in cfg.decodings.items():
                    run = measure_gen(backend, gen, choice, decoding, decoding.seeds)
                    bar.advance(decoding.seeds)
                    measured[model.key][name] = merge_measured(run, *([choices] if choices else []))
    return measured


def _metric_rows(cfg: HeadlineConfig, measured: dict[str, dict[str, Measured]]) -> list[dict]:
    reference, others = cfg.models[0].key, [m.key for m in cfg.models[1:]]
    first = next(iter(cfg.decodings))
    rows = []
    plan = [(n, d) for d in cfg.decodings for n in GEN_METRICS]
    if cfg.mcq:  # after BLEU-4 and ROUGE-L of the first decoding
        plan[2:2] = [(name, None) for name in MCQ_METRICS]
    for name, decoding in plan:
        label, unit, better = MCQ_METRICS[name] if decoding is None else GEN_METRICS[name][:3]
        runs = {key: by[decoding or first] for key, by in measured.items()}
        rows.append(
            {
                "name": name,
                "label": label,
                "unit": unit,
                "higher_is_better": better,
                "decoding": decoding,
                "values": {key: run.summary(name) for key, run in runs.items()},
                "seed_spread": None
                if decoding is None or cfg.decodings[decoding].seeds == 1
                else {key: run.spread(name) for key, run in runs.items()},
                "tests": [
                    {
                        "a": reference,
                        "b": key,
                        **paired_record(difference(runs[reference], runs[key], name)),
                    }
                    for key in others
                ],
            }
        )
    holm_adjust([t for row in rows for t in row["tests"]])
    return rows


def _finding(row: dict, test: dict, labels: dict[str, str]) -> str:
    a, b = row["values"][test["a"]]["estimate"], row["values"][test["b"]]["estimate"]
    where = f" ({row['decoding']})" if row["decoding"] else ""
    what = (
        f"{labels[test['b']]} vs {labels[test['a']]}: {row['label']}{where} {_num(a)} → {_num(b)}"
    )
    if test["significant"]:
        direction = "higher" if test["difference"] > 0 else "lower"
        return f"{what}, {direction} (p_holm = {test['p_holm']:.2g}, {test['test']})"
    return f"{what}: not resolved at n = {row['values'][test['b']]['n']} (p_holm = {test['p_holm']:.2g})"


def _num(value: float) -> str:
    return f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"


def findings(rows: list[dict], labels: dict[str, str]) -> list[str]:
    """One sentence per test of the first decoding and MCQ: what changed and whether it is resolved."""
    first = next((r["decoding"] for r in rows if r["decoding"]), None)
    chosen = [
        r
        for r in rows
        if r["decoding"] in (first, None) and r["name"] not in ("rougeL", "accuracy")
    ]
    return [_finding(row, test, labels) for row in chosen for test in row["tests"]]


def headline_payload(cfg: HeadlineConfig, measured: dict[str, dict[str, Measured]]) -> dict:
    labels = {m.key: m.label for m in cfg.models}
    adapter_labels = [a.label for a in cfg.adapters]
    rows = _metric_rows(cfg, measured)
    first = next(iter(measured.values()))
    some = next(iter(first.values()))
    return {
        "caveat": cfg.caveat,
        "template": cfg.template.key,
        "gen_suite": {"name": cfg.gen.name, "n": len(some.items["bleu4"])},
        "mcq_suite": None
        if cfg.mcq is None
        else {"name": cfg.mcq.name, "n": len(some.items["accuracy"])},
        "models": [
            {
                "key": m.key,
                "label": m.label,
                "point": ",".join(
                    f"{lb}={w:g}" for lb, w in zip(adapter_labels, m.weights, strict=True)
                ),
            }
            for m in cfg.models
        ],
        "decodings": [
            {"name": n, "description": d.description or n, "seeds": d.seeds}
            for n, d in cfg.decodings.items()
        ],
        "metrics": rows,
        "findings": findings(rows, labels),
        "examples": {key: by[next(iter(by))].outputs[:3] for key, by in measured.items()},
    }


def terminal_table(payload: dict[str, Any]) -> str:
    """The headline as plain text: one line per metric, each model's estimate [CI], and the
    Holm p of each difference from the reference."""
    models = payload["models"]
    head = f"{'metric':<34}" + "".join(f"{m['label'][:24]:>26}" for m in models)
    lines = [head, "-" * len(head)]
    for row in payload["metrics"]:
        name = row["label"] + (f" ({row['decoding']})" if row["decoding"] else "")
        cells = []
        for model in models:
            value = row["values"][model["key"]]
            test = next((t for t in row["tests"] if t["b"] == model["key"]), None)
            mark = "" if test is None else (" *" if test["significant"] else "  ")
            cells.append(
                f"{_num(value['estimate'])} [{_num(value['ci'][0])}, {_num(value['ci'][1])}]{mark}"
            )
        lines.append(f"{name[:34]:<34}" + "".join(f"{c:>26}" for c in cells))
    lines.append(
        f"95 % CIs over n = {payload['gen_suite']['n']} generation"
        + (f" / {payload['mcq_suite']['n']} MCQ" if payload["mcq_suite"] else "")
        + " items; * = differs from "
        + f"{models[0]['label']} (paired test, Holm-adjusted p < 0.05)"
    )
    return "\n".join(lines)


def run_headline(cfg: HeadlineConfig) -> int:
    measured = measure_models(cfg)
    payload = headline_payload(cfg, measured)
    inputs = [cfg.base, *(a.path for a in cfg.adapters), *cfg.gen.files()]
    inputs += cfg.mcq.files() if cfg.mcq else []
    with staged_output(cfg.out, cfg.force, inputs=inputs, stage="headline") as folder:
        atomic_write_json(folder / "headline.json", payload)
        write_manifest(folder, "headline", {"config": cfg.model_dump()})
    print(terminal_table(payload))
    return 0
