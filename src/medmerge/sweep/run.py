"""`medmerge sweep`: load the base once, move through the weight grid in memory, evaluate.

With backend hf, each grid point's merged delta is applied with merge's exact
`apply_merged_delta` and undone with `restore_weights`; with backend vllm, each point is
exported as one exact merged LoRA adapter (a few MB) and served on the base vLLM loaded once.
No checkpoint is written. Every finished cell (a weight point under one template and, for
generation, one decoding) is saved to points/ as it completes, so a rerun skips it. The
table, Pareto front and recommendation are rewritten at the end.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medmerge.eval.backends import Backend, HFBackend
from medmerge.eval.config import ModelSpec
from medmerge.eval.session import template_check
from medmerge.eval.vllm_backend import VLLMBackend
from medmerge.manifest import model_identity, sha256_json, write_manifest
from medmerge.merge import WeightPlan, apply_merged_delta, load_adapter, restore_weights
from medmerge.progress import progress_bar
from medmerge.sweep.config import SweepConfig
from medmerge.sweep.evaluate import (
    evaluate_gen,
    evaluate_mcq,
    flatten,
    load_gen_suite,
    load_mcq_suite,
)
from medmerge.sweep.pareto import pareto_front, recommend


def point_name(labels: list[str], weights: tuple[float, ...]) -> str:
    return ",".join(f"{lb}={w:.4g}" for lb, w in zip(labels, weights, strict=True))


class PointStore:
    """points/<sha>.json: one finished cell each, keyed by everything that decides its numbers."""

    def __init__(self, folder: Path, inputs: dict[str, Any]) -> None:
        self.folder = folder / "points"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.inputs = inputs

    def _path(self, cell: dict[str, Any]) -> Path:
        return self.folder / f"{sha256_json({**cell, 'inputs': self.inputs})[:20]}.json"

    def get(self, cell: dict[str, Any]) -> dict[str, Any] | None:
        path = self._path(cell)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["results"]

    def put(self, cell: dict[str, Any], results: dict[str, Any]) -> None:
        path = self._path(cell)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"cell": cell, "results": results}, default=str), "utf-8")
        os.replace(partial, path)  # a cell file is complete or absent


def _cells(cfg: SweepConfig, weights: tuple[float, ...]) -> list[dict[str, Any]]:
    cells = []
    for choice in cfg.templates:
        for suite in cfg.suites.mcq:
            cells.append(
                {
                    "kind": "mcq",
                    "weights": weights,
                    "template": choice.model_dump(),
                    "suite": suite.model_dump(),
                }
            )
        for name, decoding in cfg.decodings.items():
            for suite in cfg.suites.gen:
                cells.append(
                    {
                        "kind": "gen",
                        "weights": weights,
                        "template": choice.model_dump(),
                        "decoding": {"name": name, **decoding.model_dump()},
                        "suite": suite.model_dump(),
                    }
                )
    return cells


def _inputs(cfg: SweepConfig, adapters: list) -> dict[str, Any]:
    inputs = {
        "base": model_identity(cfg.base),
        "adapters": [a.hashes() for a in adapters],
        "method": cfg.method,
        "dtype": cfg.dtype,
        "device": cfg.device,
    }
    if cfg.backend != "hf":  # hf sweeps keep the keys (and finished points) they had before
        inputs["engine"] = {
            "backend": cfg.backend,
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "max_model_len": cfg.max_model_len,
        }
    return inputs


def _open_backend(cfg: SweepConfig, adapters: list) -> Backend:
    """The base, loaded once: in transformers (deltas applied per point) or in vLLM."""
    if cfg.backend == "vllm":
        first = cfg.weight_points()[0]
        spec = ModelSpec(
            base=cfg.base,
            adapters=[
                {"path": a.path, "weight": w} for a, w in zip(cfg.adapters, first, strict=True)
            ],
            method=cfg.method,
        )
        return VLLMBackend(spec, cfg, adapters)
    return HFBackend(
        ModelSpec(base=cfg.base), device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size
    )


@contextlib.contextmanager
def _merged_at(
    backend: Backend, adapters: list, weights: tuple[float, ...], method: str
) -> Iterator[None]:
    """Inside the block the backend runs base + the merge at `weights`."""
    if isinstance(backend, VLLMBackend):
        backend.use_weights(weights)
        yield
        return
    originals = apply_merged_delta(backend.model, adapters, WeightPlan(weights), method)
    try:
        yield
    finally:
        restore_weights(backend.model, originals)


def run_sweep(cfg: SweepConfig) -> int:
    started = time.perf_counter()
    out = Path(cfg.out)
    adapters = [load_adapter(a.path, cfg.allow_pickle) for a in cfg.adapters]
    spec = ModelSpec(base=cfg.base)
    for choice in cfg.templates:
        template_check(
            spec, adapters, choice.template, choice.enable_thinking, cfg.allow_template_mismatch
        )
    gens = {s.name: load_gen_suite(s) for s in cfg.suites.gen}
    mcqs = {s.name: load_mcq_suite(s) for s in cfg.suites.mcq}
    store = PointStore(out, _inputs(cfg, adapters))
    points = cfg.weight_points()
    todo = {w: [c for c in _cells(cfg, w) if store.get(c) is None] for w in points}
    remaining = sum(len(c) for c in todo.values())
    print(
        f"[sweep] {len(points)} weight points, {remaining} cells to evaluate "
        f"({sum(len(_cells(cfg, w)) for w in points) - remaining} already done) -> {out}"
    )
    if remaining:
        backend = _open_backend(cfg, adapters)
        with progress_bar(remaining, "sweep", enabled=cfg.progress) as bar:
            for weights, cells in todo.items():
                if not cells:
                    continue
                with _merged_at(backend, adapters, weights, cfg.method):
                    for cell in cells:
                        store.put(cell, _evaluate_cell(backend, cfg, cell, gens, mcqs))
                        bar.advance(1)
    rows = collect_rows(cfg, store)
    write_outputs(cfg, out, rows, started)
    return 0


def _evaluate_cell(backend, cfg: SweepConfig, cell: dict, gens: dict, mcqs: dict) -> dict:
    choice = next(t for t in cfg.templates if t.model_dump() == cell["template"])
    if cell["kind"] == "mcq":
        return evaluate_mcq(backend, mcqs[cell["suite"]["name"]], choice)
    decoding = cfg.decodings[cell["decoding"]["name"]]
    return evaluate_gen(backend, gens[cell["suite"]["name"]], choice, decoding)


def collect_rows(cfg: SweepConfig, store: PointStore) -> list[dict[str, Any]]:
    """One row per weight point x template x decoding; MCQ columns repeat across decodings."""
    labels = [a.label for a in cfg.adapters]
    rows = []
    for weights in cfg.weight_points():
        cells = _cells(cfg, weights)
        for choice in cfg.templates:
            mcq = {
                c["suite"]["name"]: store.get(c)
                for c in cells
                if c["kind"] == "mcq" and c["template"] == choice.model_dump()
            }
            for name in cfg.decodings:
                gen = {
                    c["suite"]["name"]: store.get(c)
                    for c in cells
                    if c["kind"] == "gen"
                    and c["template"] == choice.model_dump()
                    and c["decoding"]["name"] == name
                }
                row = {
                    "point": point_name(labels, weights),
                    **{f"w_{lb}": w for lb, w in zip(labels, weights, strict=True)},
                    "template": choice.key,
                    "decoding": name,
                    "think_penalty": cfg.decodings[name].think_penalty,
                }
                rows.append({**row, **flatten(gen, mcq)})
    return rows


def write_outputs(cfg: SweepConfig, out: Path, rows: list[dict], started: float) -> None:
    front = pareto_front(rows)
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    choice = recommend(rows, cfg.recommend)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(out / "table.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    payload = {
        "rows": rows,
        "pareto": [
            rows[i]["point"] + f" [{rows[i]['template']}/{rows[i]['decoding']}]" for i in front
        ],
        "recommendation": choice,
        "adapters": [a.label for a in cfg.adapters],
    }
    (out / "table.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", "utf-8")
    from medmerge.report.plots import plot_sweep

    plot_sweep(rows, [a.label for a in cfg.adapters], out / "tradeoff.png")
    write_manifest(
        out,
        "sweep",
        {"config": cfg.model_dump(), "seconds": round(time.perf_counter() - started, 2)},
    )
    point = choice.get("point")
    print(
        f"[sweep] {len(rows)} rows -> {out / 'table.csv'}; Pareto front {len(front)} rows; "
        f"recommended: {point or 'none feasible'} ({choice['rule']})"
    )


def evaluate_checkpoint(model_dir: str, cfg: SweepConfig) -> list[dict[str, Any]]:
    """Evaluate an exported checkpoint on the sweep's suites, templates and decodings.

    The rows have the sweep table's columns, so a sweep point can be compared with the
    evaluation of the checkpoint exported at the same weights.
    """
    backend = HFBackend(
        ModelSpec(model=model_dir), device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size
    )
    gens = {s.name: load_gen_suite(s) for s in cfg.suites.gen}
    mcqs = {s.name: load_mcq_suite(s) for s in cfg.suites.mcq}
    rows = []
    for choice in cfg.templates:
        mcq = {s.name: evaluate_mcq(backend, mcqs[s.name], choice) for s in cfg.suites.mcq}
        for name, decoding in cfg.decodings.items():
            gen = {
                s.name: evaluate_gen(backend, gens[s.name], choice, decoding)
                for s in cfg.suites.gen
            }
            rows.append(
                {
                    "template": choice.key,
                    "decoding": name,
                    "think_penalty": decoding.think_penalty,
                    **flatten(gen, mcq),
                    "raw": {"gen": gen, "mcq": mcq},
                }
            )
    return rows
