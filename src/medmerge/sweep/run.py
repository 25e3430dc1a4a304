"""`medmerge sweep`: load the base once, move through the weight grid in memory, evaluate.

The backend (`backend:`, eval/backends) loads the base once and serves each grid point
inside `backend.merged(weights)`: hf adds the exact merged delta to the weights and puts
them back after; vllm serves the point as one exact merged LoRA adapter (a few MB).
No checkpoint is written. Every finished cell (a weight point under one template and, for
generation, one decoding) is saved to points/ as it completes, keyed by the content of every
input (base, adapters, suite files), so a rerun skips it and a changed file recomputes it.
The table, Pareto front and recommendation are staged and renamed into place at the end.
The sweep folder's lock is held throughout; a folder that is not a sweep is never written.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medmerge import stats
from medmerge.artifacts import (
    STAGING_PREFIX,
    atomic_write_json,
    guard_inputs,
    output_lock,
    staged_output,
)
from medmerge.checkpoints import Checkpoint
from medmerge.errors import MedmergeError
from medmerge.eval.backends import Backend, load_backend
from medmerge.eval.config import ModelSpec
from medmerge.eval.session import template_check
from medmerge.lora import check_shapes, load_adapter
from medmerge.manifest import (
    MANIFEST_NAME,
    model_identity,
    sha256_file,
    sha256_json,
    write_manifest,
)
from medmerge.progress import progress_bar
from medmerge.sweep.config import SweepConfig
from medmerge.sweep.evaluate import (
    evaluate_gen,
    evaluate_mcq,
    flatten,
    load_gen_suite,
    load_mcq_suite,
)
from medmerge.sweep.pareto import against_reference, pareto_front, recommend


def point_name(labels: list[str], weights: tuple[float, ...]) -> str:
    return ",".join(f"{lb}={w:.4g}" for lb, w in zip(labels, weights, strict=True))


SWEEP_ENTRIES = frozenset({"points", "table.json", "table.csv", "tradeoff.png", MANIFEST_NAME})


def data_digest(path: str | os.PathLike) -> str | None:
    """sha256 of a data file; of a folder, its files' (as the readers take them); None if absent."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        return sha256_json({p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()})
    return None


class PointStore:
    """points/<sha>.json: one finished cell each, keyed by everything that decides its numbers.

    The key holds the cell's config, the model inputs' hashes and the content hashes of the
    cell's suite files, so editing a suite file in place recomputes exactly that suite's cells.
    """

    def __init__(self, folder: Path, inputs: dict[str, Any]) -> None:
        self.folder = folder / "points"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.inputs = inputs
        self.digests: dict[str, str | None] = {}  # suite file -> content hash, once per sweep

    def _digest(self, path: str) -> str | None:
        if path not in self.digests:
            self.digests[path] = data_digest(path)
        return self.digests[path]

    def _path(self, cell: dict[str, Any]) -> Path:
        files = cell["suite"]["data"]
        files = [files] if isinstance(files, str) else files
        key = {**cell, "inputs": self.inputs, "data_sha256": [self._digest(f) for f in files]}
        return self.folder / f"{sha256_json(key)[:20]}.json"

    def get(self, cell: dict[str, Any]) -> dict[str, Any] | None:
        path = self._path(cell)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["results"]
        except (ValueError, KeyError, TypeError):
            return None  # not a cell file this sweep wrote whole: evaluate the cell again

    def put(self, cell: dict[str, Any], results: dict[str, Any]) -> None:
        # a cell file is complete or absent
        atomic_write_json(self._path(cell), {"cell": cell, "results": results}, indent=None)


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


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _side_files(model_dir: str) -> dict[str, str]:
    """sha256 of a model folder's small files (tokenizer, chat template, generation config).

    model_identity covers config.json and the weights; these decide the prompts and stops.
    """
    return {
        p.name: sha256_file(p)
        for p in sorted(Path(model_dir).iterdir())
        if p.is_file() and p.name != MANIFEST_NAME and p.suffix not in _WEIGHT_SUFFIXES
    }


def _inputs(cfg: SweepConfig, adapters: list) -> dict[str, Any]:
    inputs = {
        "base": model_identity(cfg.base),
        "base_files": _side_files(cfg.base),
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
    """The base, loaded once, with the adapters ready to merge at each point (`merged`)."""
    return load_backend(ModelSpec(base=cfg.base, method=cfg.method), cfg, adapters)


def run_sweep(cfg: SweepConfig) -> int:
    """Evaluate every cell not yet in `cfg.out`/points, then write the table; 0 on success."""
    started = time.perf_counter()
    out = Path(cfg.out)
    check_sweep_out(cfg)  # before anything is loaded
    with output_lock(out):  # a second sweep into this folder is refused while this one runs
        inputs = check_sweep_out(cfg)  # again, now that no other medmerge writer can change it
        if cfg.force and out.is_dir() and any(out.iterdir()):
            # start over in a fresh folder; the old sweep stays whole until the new one is
            with staged_output(out, force=True, inputs=inputs) as staging:
                summary = _sweep_into(cfg, staging, started)
        else:
            summary = _sweep_into(cfg, _open_folder(out), started)
    print(f"[sweep] {summary} -> {out / 'table.csv'}")
    return 0


def _sweep_into(cfg: SweepConfig, folder: Path, started: float) -> str:
    adapters = [load_adapter(a.path, cfg.allow_pickle) for a in cfg.adapters]
    check_shapes(adapters, Checkpoint(cfg.base))  # merge's own refusal of a foreign adapter
    spec = ModelSpec(base=cfg.base)
    for choice in cfg.templates:
        template_check(
            spec, adapters, choice.template, choice.enable_thinking, cfg.allow_template_mismatch
        )
    gens = {s.name: load_gen_suite(s) for s in cfg.suites.gen}
    mcqs = {s.name: load_mcq_suite(s) for s in cfg.suites.mcq}
    for name, loaded in mcqs.items():
        print(f"[sweep] {power_line(name, len(loaded.items))}")
    store = PointStore(folder, _inputs(cfg, adapters))
    points = cfg.weight_points()
    todo = {w: [c for c in _cells(cfg, w) if store.get(c) is None] for w in points}
    remaining = sum(len(c) for c in todo.values())
    print(
        f"[sweep] {len(points)} weight points, {remaining} cells to evaluate "
        f"({sum(len(_cells(cfg, w)) for w in points) - remaining} already done) -> {cfg.out}"
    )
    if remaining:
        backend = _open_backend(cfg, adapters)
        with progress_bar(remaining, "sweep", enabled=cfg.progress) as bar:
            for weights, cells in todo.items():
                if not cells:
                    continue
                with backend.merged(weights):
                    for cell in cells:
                        store.put(cell, _evaluate_cell(backend, cfg, cell, gens, mcqs))
                        bar.advance(1)
    rows = collect_rows(cfg, store)
    return write_outputs(cfg, folder, rows, started, store)


def power_line(suite: str, n: int) -> str:
    """What accuracy differences n items can resolve, said before the sweep starts."""
    half = stats.accuracy_half_width(n)
    note = "warning: " if half > 0.05 else ""
    return (
        f"{note}suite {suite}: with n = {n} the 95% CI half-width on accuracy is ±{half:.2f}; "
        "smaller differences between points are not resolved"
    )


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
                rows.append({**row, **flatten(gen, mcq), "_correct": _items_correct(mcq)})
    return rows


def _items_correct(mcq: dict[str, dict[str, Any] | None]) -> list[bool] | None:
    """Every MCQ suite's per-item correctness, suites in order (None if a cell lacks it)."""
    lists = [(res or {}).get("correct") for res in mcq.values()]
    if not lists or any(items is None for items in lists):
        return None
    return [c for items in lists for c in items]


def write_outputs(
    cfg: SweepConfig, out: Path, rows: list[dict], started: float, store: PointStore | None = None
) -> str:
    """table.csv, table.json, tradeoff.png and the manifest, staged then renamed into `out`.

    A failed write (a full disk) leaves the earlier files as they were. Returns a summary line.
    """
    front = pareto_front(rows)
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    choice = recommend(rows, cfg.recommend)
    against_reference(rows, cfg.recommend)
    for row in rows:
        row.pop("_correct", None)
    payload = {
        "rows": rows,
        "pareto": [
            rows[i]["point"] + f" [{rows[i]['template']}/{rows[i]['decoding']}]" for i in front
        ],
        # the front's points a paired test says beat the reference (the others are ties)
        "pareto_better_than_reference": [
            rows[i]["point"] for i in front if rows[i].get("vs_reference") == "better"
        ],
        "recommendation": choice,
        "adapters": [a.label for a in cfg.adapters],
    }
    manifest = {"config": cfg.model_dump(), "seconds": round(time.perf_counter() - started, 2)}
    if store is not None:
        manifest["inputs"] = {**store.inputs, "data_sha256": dict(store.digests)}
    with _staged_files(out) as staging:
        _write_csv(staging / "table.csv", rows)
        _write_text(staging / "table.json", json.dumps(payload, indent=2, default=str) + "\n")
        from medmerge.report.plots import plot_sweep

        plot_sweep(rows, [a.label for a in cfg.adapters], staging / "tradeoff.png")
        write_manifest(staging, "sweep", manifest)
    point = choice.get("point")
    verdict = (choice.get("paired_test") or {}).get("verdict")
    return (
        f"{len(rows)} rows; Pareto front {len(front)} rows; "
        f"recommended: {point or 'none feasible'} ({choice['rule']})"
        + (f"; {verdict}" if verdict else "")
    )


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


@contextlib.contextmanager
def _staged_files(out: Path) -> Iterator[Path]:
    """A staging folder inside `out`; its files, fsynced, replace their namesakes in `out`.

    The old manifest goes first and the new one comes last, so a folder caught between the
    renames reads as unfinished (a pipeline reruns it) rather than as a finished sweep.
    """
    staging = out / f"{STAGING_PREFIX}outputs-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        yield staging
        names = sorted(p.name for p in staging.iterdir() if p.name != MANIFEST_NAME)
        for name in [*names, MANIFEST_NAME]:
            with open(staging / name, "rb") as handle:
                os.fsync(handle.fileno())
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for name in [*names, MANIFEST_NAME]:
            os.replace(staging / name, out / name)
    except OSError as exc:
        raise MedmergeError(
            f"{out}: could not write the sweep table ({exc.strerror or exc}); the earlier "
            "table and manifest were left as they were and the finished points are kept in "
            "points/ — free some space (or fix the permissions) and rerun"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- the output folder


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve(strict=False)


def _manifest_stage(folder: Path) -> str | None:
    try:
        with open(folder / MANIFEST_NAME, encoding="utf-8") as handle:
            stage = json.load(handle).get("stage")
    except (OSError, ValueError, AttributeError):
        return None
    return stage if isinstance(stage, str) else None


def sweep_folder_problem(out: str | os.PathLike) -> str | None:
    """Why a sweep may not write into `out`; None when it is absent, empty or a sweep's folder."""
    folder = Path(out)
    if not os.path.lexists(folder):
        return None
    if not folder.is_dir():
        return "it is a file"
    if os.path.lexists(folder / MANIFEST_NAME) and _manifest_stage(folder) != "sweep":
        stage = _manifest_stage(folder)
        return (
            f"its medmerge manifest is of stage {stage!r}"
            if stage
            else "its manifest is unreadable"
        )
    foreign = sorted(
        e.name
        for e in folder.iterdir()
        if e.name not in SWEEP_ENTRIES and not e.name.startswith(STAGING_PREFIX)
    )
    if foreign:
        more = ", ..." if len(foreign) > 3 else ""
        return f"it holds files a sweep does not write: {', '.join(foreign[:3])}{more}"
    points = folder / "points"
    if os.path.lexists(points) and (points.is_symlink() or not points.is_dir()):
        return "its points entry is not a folder"
    return None


def check_sweep_out(cfg: SweepConfig) -> list[str]:
    """Refuse an --out that is not a sweep folder, or is, holds or is part of an input.

    Returns the inputs to guard when the folder is replaced; an earlier sweep inside an input
    folder (runs/pt/sweep) is this sweep's own, not part of that input.
    """
    out = Path(cfg.out)
    problem = sweep_folder_problem(out)
    if problem:
        raise MedmergeError(
            f"{out}: not a sweep folder ({problem}); it was left as it is — choose a new --out "
            "or an earlier sweep's folder (--force only restarts an earlier sweep)"
        )
    inputs: Iterable[str] = [cfg.base, *(a.path for a in cfg.adapters), *cfg.data_files()]
    if out.is_dir():
        target = _resolved(out)
        inputs = [i for i in inputs if _resolved(i) not in target.parents]
    guard_inputs(out, inputs)
    return list(inputs)


def _open_folder(out: Path) -> Path:
    """Create `out` if needed and remove what killed runs left (staged files, cell partials)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MedmergeError(
            f"{out}: cannot create the sweep folder ({exc.strerror or exc}); choose a writable --out"
        ) from None
    for folder in (out, out / "points"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name.startswith(STAGING_PREFIX) or entry.suffix == ".partial":
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
    return out


def evaluate_checkpoint(model_dir: str, cfg: SweepConfig) -> list[dict[str, Any]]:
    """Evaluate an exported checkpoint on the sweep's suites, templates and decodings.

    The rows have the sweep table's columns, so a sweep point can be compared with the
    evaluation of the checkpoint exported at the same weights.
    """
    return checkpoint_rows(load_backend(ModelSpec(model=model_dir), cfg), cfg)


def checkpoint_rows(backend: Backend, cfg: SweepConfig) -> list[dict[str, Any]]:
    """The sweep table's rows for the model `backend` serves as it is (no weights applied)."""
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
