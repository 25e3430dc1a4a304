"""`medmerge verify`: structure, untouched tensors, touched tensors, weight recovery, behaviour,
provenance; a rich table on the terminal and verify.json beside the checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medmerge import provenance
from medmerge.architectures import architecture_of
from medmerge.artifacts import atomic_write_json, guard_inputs, output_lock
from medmerge.checkpoints import Checkpoint, Scratch, TensorEntry, read_ahead
from medmerge.checkpoints.stream import CheckpointStream
from medmerge.errors import ConfigError
from medmerge.lora import (
    Adapter,
    MergeSpec,
    MethodParams,
    WeightPlan,
    adapter_deltas,
    all_finite,
    check_fits,
    factors_ahead,
    get_method,
)
from medmerge.manifest import model_identity, read_manifest
from medmerge.verify.config import VerifyConfig
from medmerge.verify.diagnosis import RIGHT, RoundingAwareFit, hypotheses, judge, measure
from medmerge.verify.recovery import Recovery, solve
from medmerge.verify.report import print_summary
from medmerge.verify.tensors import (
    ULP_DTYPES,
    FitSums,
    check_touched,
    check_untouched,
    checked_by_factors,
    dtype_problems,
    erasure_warnings,
    names_to_check,
    structure_problems,
)


def run_verify(cfg: VerifyConfig) -> int:
    """0 when every check passes, 1 when one fails (usage errors raise, exit 2).

    The merged folder's lock is held throughout: a merge that would replace the folder while it
    is read waits its turn (it is refused), and one already writing it makes verify refuse.
    """
    path = Path(cfg.report) if cfg.report else Path(cfg.merged) / "verify.json"
    _check_report_path(cfg, path)
    with output_lock(cfg.merged, reader="verify"):
        report = verify(cfg)
        atomic_write_json(path, report)  # an earlier report is replaced whole or not at all
    print_summary(report, path)
    if cfg.strict and report["verdict"] == RIGHT:
        return 1
    return 0 if report["ok"] else 1


def _is_verify_report(path: Path) -> bool:
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"ok", "tensors_checked", "failures"} <= record.keys()


def _check_report_path(cfg: VerifyConfig, path: Path) -> None:
    """--report may replace an earlier verify report, never another file or one of the inputs."""
    if path.is_dir():
        raise ConfigError(f"{path}: --report is a folder; pass a file path such as verify.json")
    inputs = [cfg.base, cfg.merged, *(a.path for a in cfg.adapters)]
    guard_inputs(path, inputs, replaceable=_is_verify_report)
    if os.path.lexists(path) and not _is_verify_report(path):
        raise ConfigError(
            f"{path}: --report exists and is not a verify report; choose another path "
            "(verify replaces only its own earlier reports)"
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"{path}: --report's folder {path.parent} does not exist; create it first"
        )


def verify_merge_output(spec: MergeSpec, base: str, staging: Path, out: str) -> bool:
    """The check `medmerge merge` runs on its staged output (tensors and provenance, no logits)."""
    verify_cfg = VerifyConfig(
        base=base,
        merged=str(staging),
        adapters=[a.model_dump() for a in spec.adapters],
        method=spec.method,
        logits=False,
        report=str(staging / "verify.json"),
    )
    report = _renamed(verify(verify_cfg, merge_spec=spec), staging, Path(out))
    atomic_write_json(staging / "verify.json", report)
    print_summary(report, Path(out) / "verify.json")
    return bool(report["ok"])


def _renamed(report: dict[str, Any], staging: Path, out: Path) -> dict[str, Any]:
    """The report as it reads once the staging folder is renamed into place: every path and
    message names the final folder, never the staging one, which no longer exists then."""
    text = json.dumps(report)
    for old, new in ((staging.resolve(), out.resolve()), (staging, out)):
        text = text.replace(json.dumps(str(old))[1:-1], json.dumps(str(new))[1:-1])
    return json.loads(text)


def verify(cfg: VerifyConfig, merge_spec: MergeSpec | None = None) -> dict[str, Any]:
    """Run every check; return the verify.json record. `merge_spec` is given by `medmerge
    merge` verifying its own staged output (which has no manifest yet).

    The tensors are a certificate first: every touched tensor within 1 ulp of the intended
    merge (fp64, rounded once) and every untouched one byte-identical in its own dtype is
    EXACT, whatever a weight fit says. Only a merge that is not exact is diagnosed.
    """
    merged_dir = Path(cfg.merged)
    manifest = read_manifest(merged_dir)
    base, merged = Checkpoint(cfg.base), Checkpoint(merged_dir)
    spec = (merge_spec or _intended(cfg, manifest)).on(architecture_of(base.config))
    adapters = spec.load(cfg.allow_pickle)
    check_fits(adapters, base.shapes(), spec.plan)
    intended = Intended(adapters, spec.plan, spec.method, spec.params)
    fit = FitSums.empty(len(adapters))
    results, tensor_failures, digests = _check_tensors(base, merged, intended, cfg.sample, fit)
    with ThreadPoolExecutor(max_workers=2) as pool:  # what the streams did not hash already
        identity = pool.submit(model_identity, cfg.base, digests.get("base"))
        own_files = pool.submit(
            provenance.check_own_files,
            merged_dir,
            manifest if merge_spec is None else None,
            digests.get("merged"),
        )
        failures = provenance.check_recorded_bases(adapters, identity.result())
        failures += own_files.result()
    warnings = []
    if merge_spec is None:
        failures += provenance.check_adapter_hashes(adapters, manifest)
        failures += provenance.check_adapter_manifests(adapters, manifest)
        failures += provenance.check_side_files(merged_dir, manifest)
        if manifest is None:
            warnings.append(provenance.skipped_without_manifest(merged_dir))
    failures += provenance.check_side_files_against_base(Path(cfg.base), merged_dir)
    failures += provenance.check_template(adapters, cfg.template, cfg.enable_thinking)
    exact = not tensor_failures
    recovery = _recover(fit, len(adapters))
    if exact:
        verdict = "EXACT"
        warnings += erasure_warnings(results, merged.stored_float_dtype())
    else:
        verdict, tensor_failures, weights = _diagnose(base, merged, intended, results, recovery)
        if weights is not None:
            recovery = Recovery(weights, recovery.residual, recovery.noise_floor)
        if verdict == RIGHT:
            warnings += tensor_failures
            tensor_failures = []
    behaviour = _behaviour(cfg, merged_dir, intended, failures, warnings) if cfg.logits else None
    record = _record(cfg, spec.adapters, recovery, results, tensor_failures + failures, behaviour)
    return {**record, "verdict": verdict, "method": spec.method, "warnings": warnings}


def _diagnose(base, merged, intended, results, recovery) -> tuple[str, list[str], list | None]:
    """(verdict, failure lines, recovered weights) for tensors that are not the exact merge.

    Tensors off the intended merge in a linear merge with global weights are re-simulated
    under each named hypothesis (diagnosis.py); changed untouched tensors, dtypes, names
    and NaN stay failures whatever the touched tensors show."""
    touched_lines = [r.problem for r in results if r.touched and r.problem]
    others = [line for line in results.failures if line not in touched_lines]
    method = get_method(intended.method)
    if not (method.low_rank_exact and intended.plan.is_global) or results.not_finite:
        return "WRONG", results.failures, None
    names = [r.name for r in results if r.touched]
    if any(merged.entries[n].torch_dtype not in ULP_DTYPES for n in names):
        return "WRONG", results.failures, None  # the dtype lines say why
    weights = list(intended.plan.weights)
    labels = [a.path.name for a in intended.adapters]
    fit = RoundingAwareFit.empty(len(weights))

    def tensors():
        for name in names:
            b, m = base.read(name), merged.read(name)
            deltas = adapter_deltas(name, intended.adapters, b)
            fit.add(b, m, deltas, weights)
            yield name, b, m, deltas

    candidates = hypotheses(weights, labels, merged.stored_float_dtype())
    found = judge(measure(tensors, candidates), fit, weights, labels)
    if found.verdict == "EXACT":  # the touched tensors are right; the rest is not
        return "WRONG", others, None
    verdict = "WRONG" if others and found.verdict == RIGHT else found.verdict
    return verdict, others + found.lines, found.weights


def _recover(fit: FitSums, count: int) -> Recovery:
    """The least-squares weights; NaN/Inf in the merged tensors poison the sums (those tensors
    already failed), so then every weight is NaN."""
    if not (math.isfinite(fit.energy) and bool(torch.isfinite(fit.rhs).all())):
        return Recovery([float("nan")] * count, float("nan"), float("nan"))
    return solve(fit)


def _behaviour(cfg, merged_dir, intended, failures, warnings) -> dict[str, Any]:
    from medmerge.verify.behaviour import behaviour_failure, compare_logits

    behaviour = compare_logits(Path(cfg.base), merged_dir, *_fields(intended), cfg.probe_prompts)
    if behaviour.get("skipped"):
        warnings.append(f"behaviour check skipped: {behaviour['skipped']}")
    elif behaviour.get("load_error"):
        failures.append(f"behaviour: the merged folder does not load ({behaviour['load_error']})")
    elif (problem := behaviour_failure(behaviour)) is not None:
        failures.append(problem)
    return behaviour


@dataclass(frozen=True)
class Intended:
    """What the merged checkpoint should be: base + these adapters at these weights."""

    adapters: Sequence[Adapter]
    plan: WeightPlan
    method: str
    params: MethodParams


class TensorResults(list):
    """Each checked tensor's result, with every tensor-level failure line and whether a
    merged tensor holds NaN/Inf."""

    failures: list[str]
    not_finite: bool


def _check_tensors(
    base: Checkpoint, merged: Checkpoint, intended: Intended, sample: int | None, fit: FitSums
) -> tuple[TensorResults, list[str], dict[str, dict[Path, str]]]:
    """Stream both checkpoints tensor by tensor; return each tensor's result, every
    tensor-level failure (names and shapes, dtypes, NaN/Inf, touched tensors off the
    intended merge, untouched ones changed) and, when every tensor is checked, both
    checkpoints' file digests, made as the files were read.

    Checking every tensor reads both checkpoints once, front to back, in two streams that
    hash as they read (`CheckpointStream`); a sample reads its tensors only, the next pair
    while this one is checked."""
    failures = structure_problems(base, merged) + dtype_problems(base, merged)
    checks = names_to_check(base, merged, intended.adapters, sample)
    scratch = Scratch()
    results = TensorResults()
    results.not_finite = False
    digests: dict[str, dict[Path, str]] = {}
    adapters, plan, method, params = _fields(intended)
    ahead = [n for n, touched in checks if touched and checked_by_factors(n, adapters, method)]
    with contextlib.ExitStack() as stack:
        factors_reader = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        factors = factors_ahead(
            ahead, adapters, plan, factors_reader, unweighted=True, scratch=scratch
        )
        by_factors = set(ahead)
        if sample is None:
            streams = [
                stack.enter_context(CheckpointStream(c.files, depth=_STREAM_DEPTH))
                for c in (base, merged)
            ]
            pairs = _streamed_pairs(checks, base, merged, streams, scratch)
        else:
            reader = stack.enter_context(ThreadPoolExecutor(max_workers=2))
            pairs = _sampled_pairs(checks, base, merged, scratch, reader)
        for name, touched, tensors in pairs:
            if touched:
                base_tensor, merged_tensor = tensors
                stacked = next(factors) if name in by_factors else None
                result = check_touched(
                    name,
                    base_tensor,
                    merged_tensor,
                    adapters,
                    plan,
                    method,
                    params,
                    fit,
                    scratch,
                    stacked,
                )
                finite = result.finite or all_finite(merged_tensor)
            else:
                result, finite = check_untouched(name, tensors)
            results.append(result)
            if not finite:
                failures.append(f"{name}: holds NaN or Inf")
                results.not_finite = True
        if sample is None:
            digests = {"base": streams[0].digests(), "merged": streams[1].digests()}
    results.failures = failures + [r.problem for r in results if r.problem]
    return results, results.failures, digests


_STREAM_DEPTH = 8  # 4 MB blocks read ahead per checkpoint while a tensor pair is checked
_CHUNK_ELEMENTS = 1 << 20  # elements of an untouched tensor compared at a time


def _streamed_pairs(checks, base: Checkpoint, merged: Checkpoint, streams, scratch: Scratch):
    """(name, touched, tensors) in check order from the two streams: a touched tensor's base
    and merged tensor whole, an untouched one's as (base, merged) chunk pairs (consumed
    before the next tensor is read). Each stays valid until the next is asked for."""
    base_stream, merged_stream = streams
    for name, touched in checks:
        b, m = base.entries[name], merged.entries[name]
        if touched:
            tensors = (
                base_stream.read(b, scratch.work("verify-base", (b.nbytes,), torch.uint8)),
                merged_stream.read(m, scratch.work("verify-merged", (m.nbytes,), torch.uint8)),
            )
            yield name, True, tensors
        else:
            yield name, False, _chunk_pairs(b, m, base_stream, merged_stream, scratch)


def _chunk_pairs(b: TensorEntry, m: TensorEntry, base_stream, merged_stream, scratch: Scratch):
    """The same elements of two stored tensors at a time, flat: views of both streams' blocks
    where both hold the next elements (no copy), else up to _CHUNK_ELEMENTS copied."""
    count, room = math.prod(b.shape), (_CHUNK_ELEMENTS * 8,)  # bytes of the widest dtype
    start = 0
    while start < count:
        stop = min(start + _CHUNK_ELEMENTS, count)
        pieces = [entry.elements(start, stop) for entry in (b, m)]
        both = min(base_stream.span(pieces[0]), merged_stream.span(pieces[1]))
        if both:
            stop = start + both
            pieces = [entry.elements(start, stop) for entry in (b, m)]
            yield base_stream.view(pieces[0]), merged_stream.view(pieces[1])
        else:
            yield (
                base_stream.read(pieces[0], scratch.work("verify-base-chunk", room, torch.uint8)),
                merged_stream.read(
                    pieces[1], scratch.work("verify-merged-chunk", room, torch.uint8)
                ),
            )
        start = stop


def _sampled_pairs(checks, base: Checkpoint, merged: Checkpoint, scratch: Scratch, reader):
    """(name, touched, tensors) for a sample: whole tensors, the next pair read while this
    one is checked (an untouched one as a single chunk pair)."""
    names = [name for name, _ in checks]
    base_tensors = read_ahead(base, names, scratch, reader)
    merged_tensors = read_ahead(merged, names, scratch, reader)
    for (name, touched), b, m in zip(checks, base_tensors, merged_tensors, strict=True):
        yield name, touched, ((b, m) if touched else [(b, m)])


def _fields(intended: Intended):
    return intended.adapters, intended.plan, intended.method, intended.params


def _intended(cfg: VerifyConfig, manifest: dict | None) -> MergeSpec:
    """The merge to check against: the merged folder's recorded merge, with the adapters and
    method given on the flags in place of the recorded ones."""
    return MergeSpec.from_manifest(
        manifest or {}, cfg.merged, adapters=cfg.adapters or None, method=cfg.method
    )


def _record(cfg, specs, recovery, results, failures, behaviour) -> dict[str, Any]:
    touched = [r for r in results if r.touched]
    return {
        "ok": not failures,
        "base": cfg.base,
        "merged": cfg.merged,
        "sampled": cfg.sample is not None,
        "adapters": [
            {
                "path": s.path,
                "intended_weight": s.weight,
                "recovered_weight": w,
                "residual": recovery.residual,
            }
            for s, w in zip(specs, recovery.weights, strict=True)
        ],
        "fit": {"residual": recovery.residual, "rounding_floor": recovery.noise_floor},
        "tensors_checked": len(results),
        "tensors_touched": len(touched),
        "tensors_failed": sum(1 for r in results if r.problem),
        "max_ulp_error": max((r.max_ulp for r in touched), default=0),
        "min_retention": min((r.retention for r in touched), default=1.0),
        "max_delta_rel_error": max((r.delta_rel_error for r in touched), default=0.0),
        "behaviour": behaviour,
        "failures": failures,
        "tensors": [
            {
                "name": r.name,
                "max_ulp": r.max_ulp,
                "over_one_ulp": r.over_one_ulp,
                "delta_rel_error": r.delta_rel_error,
                "retention": r.retention,
                "recovered": r.recovered,
                "problem": r.problem,
            }
            for r in touched
        ],
    }
