"""The pipeline's mistakes stage: the broken merges the study names, made on purpose, each
evaluated next to the true merge and checked by `verify` or the template guard.

- alpha_squared: a merge script that scales both LoRA factors of each adapter by its weight
  (B·w, A·w), so each delta enters with w² (0.09 / 0.49 instead of 0.3 / 0.7);
- wrong_adapter: the SFT adapter exported alone and passed off as the merge;
- overwritten: the export folder written again by a later run of a sweep script (its next
  point, PT 0.1 / SFT 0.9), so the folder named for 0.3 / 0.7 holds another merge;
- template: the true merge evaluated with another template than the training one (Qwen3's
  default, thinking on), which the template guard refuses unless told to allow it.

The broken checkpoints are written as the scripts would write them (no medmerge manifest),
so verify judges them by their tensors against the claimed recipe alone. Every metric is
greedy; each difference from the true merge has its paired test, one Holm family.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field
from safetensors.torch import load_file, save_file

from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.config import StageConfig
from medmerge.errors import MedmergeError
from medmerge.eval.backends import load_backend
from medmerge.eval.config import ModelSpec
from medmerge.eval.session import template_check
from medmerge.lora import load_adapter
from medmerge.manifest import MANIFEST_NAME, write_manifest
from medmerge.merge import MergeConfig, run_merge
from medmerge.progress import progress_bar
from medmerge.sweep.config import DecodingChoice, SweepAdapter, TemplateChoice
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
from medmerge.verify import VerifyConfig
from medmerge.verify.run import verify

ADAPTER_FILE = "adapter_model.safetensors"


class MistakesConfig(SuiteStageConfig):
    path_fields = ("base", "adapters", "merged", "out")

    adapters: list[SweepAdapter] = Field(min_length=2, max_length=2)  # PT, SFT
    weights: list[float] = Field(default_factory=lambda: [0.3, 0.7])  # the claimed recipe
    merged: str = Field(description="the true exported merge (the merge stage's folder)")
    wrong_template: TemplateChoice = Field(
        default_factory=lambda: TemplateChoice(template="qwen3", enable_thinking=True)
    )
    decoding: DecodingChoice = Field(default_factory=lambda: DecodingChoice(preset="A"))
    later_point: list[float] = Field(default_factory=lambda: [0.1, 0.9])


class Mistake(StageConfig):
    key: str
    label: str
    what: str


def _scaled_adapter(source: str, weight: float, folder: Path) -> Path:
    """A copy of an adapter with both factors multiplied by `weight` (the α² script's step)."""
    shutil.copytree(source, folder)
    tensors = load_file(str(folder / ADAPTER_FILE))
    scaled = {k: v * weight if ".lora_" in k else v for k, v in tensors.items()}
    save_file(scaled, str(folder / ADAPTER_FILE), metadata={"format": "pt"})
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    return folder


def _export(cfg: MistakesConfig, adapters: list[tuple[str, float]], out: Path, force=False) -> Path:
    merge = MergeConfig(
        base=cfg.base,
        adapters=[{"path": p, "weight": w} for p, w in adapters],
        out=str(out),
        verify=False,
        force=force,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # its lines name the stage's staging folder
        run_merge(merge)
    return out


def _as_a_script_writes_it(folder: Path) -> Path:
    (folder / MANIFEST_NAME).unlink()  # the scripts that make these mistakes write none
    return folder


def broken_checkpoints(cfg: MistakesConfig, work: Path) -> dict[str, tuple[Mistake, Path, str]]:
    """key -> (what it is, its folder, what medmerge itself said while it was made)."""
    pt, sft = (a.path for a in cfg.adapters)
    w_pt, w_sft = cfg.weights
    scaled = [
        (str(_scaled_adapter(pt, w_pt, work / "scaled-pt")), 1.0),
        (str(_scaled_adapter(sft, w_sft, work / "scaled-sft")), 1.0),
    ]
    made = {}
    alpha = _export(cfg, scaled, work / "alpha_squared")
    made["alpha_squared"] = (
        Mistake(
            key="alpha_squared",
            label="α² script",
            what=f"both factors of each adapter scaled by its weight, so the deltas enter with "
            f"{w_pt**2:g} / {w_sft**2:g}",
        ),
        _as_a_script_writes_it(alpha),
        "",
    )
    wrong = _export(cfg, [(sft, 1.0)], work / "wrong_adapter")
    made["wrong_adapter"] = (
        Mistake(
            key="wrong_adapter",
            label="wrong adapter exported",
            what="the SFT adapter exported alone (weight 1) and passed off as the merge",
        ),
        _as_a_script_writes_it(wrong),
        "",
    )
    folder = _export(cfg, [(pt, w_pt), (sft, w_sft)], work / "overwritten")
    later = [(pt, cfg.later_point[0]), (sft, cfg.later_point[1])]
    try:  # what medmerge says to the later run
        _export(cfg, later, folder)
        guard = ""
    except MedmergeError as exc:
        guard = f"medmerge merge refused the later run: {exc}"
    _export(cfg, later, folder, force=True)  # what a script without that guard does
    made["overwritten"] = (
        Mistake(
            key="overwritten",
            label="export folder overwritten",
            what=f"the folder of the {w_pt:g} / {w_sft:g} merge written again by a later run at "
            f"{cfg.later_point[0]:g} / {cfg.later_point[1]:g}",
        ),
        _as_a_script_writes_it(folder),
        guard,
    )
    return made


def _verify_claim(cfg: MistakesConfig, folder: Path) -> dict[str, Any]:
    """verify of `folder` against the claimed recipe: verdict, its lines, its exit status."""
    report = verify(
        VerifyConfig(
            base=cfg.base,
            merged=str(folder),
            logits=False,
            adapters=[
                {"path": a.path, "weight": w}
                for a, w in zip(cfg.adapters, cfg.weights, strict=True)
            ],
        )
    )
    lines = list(report.get("failures") or [])
    return {
        "caught_by": "verify",
        "verdict": report["verdict"],
        "diagnosis": " ".join(lines[:3]) or "verify found the tensors as claimed",
        "exit_code": 0 if report["ok"] else 1,
    }


def _template_guard(cfg: MistakesConfig) -> dict[str, Any]:
    adapters = [load_adapter(a.path) for a in cfg.adapters]
    choice = cfg.wrong_template
    try:
        template_check(
            ModelSpec(base=cfg.base), adapters, choice.template, choice.enable_thinking, False
        )
    except MedmergeError as exc:
        return {
            "caught_by": "template guard",
            "verdict": "REFUSED",
            "diagnosis": str(exc),
            "exit_code": 2,
        }
    return {"caught_by": "template guard", "verdict": "ALLOWED", "diagnosis": "", "exit_code": 0}


def _measure(cfg: MistakesConfig, folder: Path, choice: TemplateChoice, gen, mcq) -> Measured:
    backend = load_backend(ModelSpec(model=str(folder)), cfg)
    parts = [measure_gen(backend, gen, choice, cfg.decoding)]
    if mcq is not None:
        parts.append(measure_mcq(backend, mcq, choice, cfg.mcq.continuation))
    return merge_measured(*parts)


def _metrics(measured: Measured) -> dict[str, Any]:
    names = [*GEN_METRICS, *MCQ_METRICS]
    return {n: measured.summary(n) for n in names if n in measured.items}


def mistakes_payload(cfg: MistakesConfig, work: Path) -> dict[str, Any]:
    made = broken_checkpoints(cfg, work)
    gen = load_gen_suite(cfg.gen)
    mcq = load_mcq_suite(cfg.mcq) if cfg.mcq else None
    claimed = {a.label: w for a, w in zip(cfg.adapters, cfg.weights, strict=True)}
    rows = []
    with progress_bar(len(made) + 2, "mistakes", enabled=cfg.progress) as bar:
        truth = _measure(cfg, Path(cfg.merged), cfg.template, gen, mcq)
        bar.advance(1)
        for mistake, folder, guard in made.values():
            found = _verify_claim(cfg, folder)
            if guard:
                found["guard"] = guard
            rows.append((mistake, _measure(cfg, folder, cfg.template, gen, mcq), found))
            bar.advance(1)
        template = Mistake(
            key="template",
            label="evaluated with another template",
            what=f"the true merge evaluated with {cfg.wrong_template.key} instead of "
            f"{cfg.template.key}, the template both adapters were trained with",
        )
        measured = _measure(cfg, Path(cfg.merged), cfg.wrong_template, gen, mcq)
        rows.append((template, measured, _template_guard(cfg)))
        bar.advance(1)
    entries = []
    payload_rows = []
    for mistake, measured, found in rows:
        tests = {n: paired_record(difference(truth, measured, n)) for n in _metrics(measured)}
        entries += tests.values()
        payload_rows.append(
            {**mistake.model_dump(), "metrics": _metrics(measured), "tests": tests, **found}
        )
    holm_adjust(entries)
    return {
        "claimed": {"weights": claimed, "template": cfg.template.key},
        "true_merge": {
            "label": "true merge (" + " / ".join(f"{k} {v:g}" for k, v in claimed.items()) + ")",
            "metrics": _metrics(truth),
        },
        "rows": payload_rows,
    }


def _renamed(value: Any, staging: str, final: str) -> Any:
    """`value` with the staging folder's path replaced by the folder it is renamed to."""
    if isinstance(value, str):
        return value.replace(staging, final)
    if isinstance(value, dict):
        return {k: _renamed(v, staging, final) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, staging, final) for v in value]
    return value


def run_mistakes(cfg: MistakesConfig) -> int:
    inputs = [cfg.base, cfg.merged, *(a.path for a in cfg.adapters), *cfg.gen.files()]
    inputs += cfg.mcq.files() if cfg.mcq else []
    with staged_output(cfg.out, cfg.force, inputs=inputs, stage="mistakes") as folder:
        payload = mistakes_payload(cfg, folder / "models")
        payload = _renamed(payload, str(folder.resolve()), str(Path(cfg.out).resolve()))
        payload = _renamed(payload, str(folder), cfg.out)
        atomic_write_json(folder / "mistakes.json", payload)
        write_manifest(folder, "mistakes", {"config": cfg.model_dump()})
    for row in payload["rows"]:
        print(
            f"[mistakes] {row['label']}: {row['caught_by']} said {row['verdict']}: {row['diagnosis'][:160]}"
        )
    return 0
