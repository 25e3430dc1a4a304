"""`medmerge compare RUN_A RUN_B [RUN ...]`: paired differences of eval runs on shared items.

Each later run is compared with the first, on the items both scored (matched by subject and
id for `eval mcq`, by id for `eval gen` / `score`; a multi-seed run contributes its first
seed). Accuracy differences take the exact McNemar test; BLEU-4, ROUGE-L, corpus sacreBLEU
and the think and marker rates a paired bootstrap over the shared items. Every difference
has its 95 % CI, p-value, the Holm-adjusted p-value (one family: every test of the
comparison) and the minimum difference detectable at this n (5 %, 80 % power).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from medmerge import stats
from medmerge.artifacts import atomic_write_json, staged_output
from medmerge.config import StageConfig
from medmerge.errors import DataError
from medmerge.eval.uncertainty import sacrebleu_statistic
from medmerge.manifest import write_manifest


class CompareConfig(StageConfig):
    """`medmerge compare`: paired tests between eval result folders."""

    path_fields = ("runs", "out")

    runs: list[str] = Field(
        min_length=2, description="eval result folders; each later one is compared with the first"
    )
    out: str = Field(description="folder for compare.json")
    force: bool = Field(default=False, description="replace an existing --out")
    resamples: int = Field(default=stats.RESAMPLES, ge=100, description="bootstrap resamples")
    seed: int = Field(default=0, description="bootstrap seed")


@dataclass(frozen=True)
class Run:
    """One eval folder: its command (mcq, gen, score) and its records by item key."""

    path: str
    command: str
    items: dict[str, dict[str, Any]]
    language: str = "en"  # gen: the sacreBLEU tokenizer the run scored with


def _key(record: dict[str, Any], command: str) -> str:
    if command == "mcq":
        return f"{record.get('subject') or ''}/{record['id']}"
    return str(record["id"])


def load_run(path: str) -> Run:
    """results.json and predictions.jsonl of an `eval mcq`, `eval gen` or `score` folder."""
    folder = Path(path)
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        lines = (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: not a finished eval folder ({exc}); give folders written by "
            "medmerge eval mcq / eval gen / score"
        ) from None
    command = results.get("command")
    if command not in ("mcq", "gen", "score"):
        raise DataError(f"{path}: results of {command!r}; compare reads eval mcq, gen or score")
    records = [json.loads(line) for line in lines if line.strip()]
    first_seed = records[0].get("seed") if records else None
    items: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(records, 1):
        if record.get("seed") != first_seed:
            continue
        key = _key(record, command)
        if key in items:
            raise DataError(
                f"{path}/predictions.jsonl:{number}: item {key!r} appears twice; "
                "compare needs one record per item"
            )
        items[key] = record
    language = (results.get("metrics") or {}).get("language", "en")
    return Run(path, "gen" if command == "score" else command, items, language)


# metric -> (test kind, what is read from one record); "corpus" metrics read the text
MCQ_METRICS = {
    "accuracy": lambda r: r["correct"],
    "accuracy_norm": lambda r: r["correct_norm"],
}
GEN_METRICS: dict[str, Callable[[dict[str, Any]], float]] = {
    "bleu4": lambda r: r["raw"]["bleu4"],
    "rougeL": lambda r: r["raw"]["rougeL"],
    "bleu4_no_think": lambda r: r["no_think"]["bleu4"],
    "think_tag_rate": lambda r: float(r["leakage"]["has_think_tag"]),
    "marker_rate": lambda r: float(r["leakage"]["has_marker"]),
}


def _mcq_tests(a: list[dict], b: list[dict]) -> dict[str, stats.Difference]:
    tests = {}
    for name, read in MCQ_METRICS.items():
        if all("correct_norm" in r for r in a + b) or name == "accuracy":
            tests[name] = stats.accuracy_difference([read(r) for r in a], [read(r) for r in b])
    return tests


def _gen_tests(
    a: list[dict], b: list[dict], language: str | list[str], cfg: CompareConfig
) -> dict[str, stats.Difference]:
    tests = {}
    for name, read in GEN_METRICS.items():
        tests[name] = stats.paired_bootstrap(
            stats.mean_of([read(r) for r in a]),
            stats.mean_of([read(r) for r in b]),
            len(a),
            cfg.resamples,
            cfg.seed,
        )
    references = [r["reference"] for r in a]
    if language == "mixed":  # each record scored with its own language's tokenizer
        language = [r.get("language", "en") for r in a]
    tests["sacrebleu"] = stats.paired_bootstrap(
        sacrebleu_statistic([r["prediction"] for r in a], references, language),
        sacrebleu_statistic([r["prediction"] for r in b], references, language),
        len(a),
        cfg.resamples,
        cfg.seed,
    )
    return tests


def _shared(first: Run, other: Run) -> list[str]:
    if first.command != other.command:
        raise DataError(
            f"{other.path}: a {other.command} run cannot be paired with {first.path} "
            f"({first.command}); compare runs of the same kind"
        )
    shared = [k for k in first.items if k in other.items]
    if not shared:
        raise DataError(
            f"{first.path} and {other.path} share no items ({len(first.items)} and "
            f"{len(other.items)} items, matched by id); compare runs on the same data"
        )
    for key in shared:
        ref_a, ref_b = first.items[key].get("reference"), other.items[key].get("reference")
        if ref_a != ref_b:
            raise DataError(
                f"{other.path}: item {key!r} has another reference than in {first.path}; "
                "compare runs on the same data"
            )
    return shared


def compare_pair(first: Run, other: Run, cfg: CompareConfig) -> dict[str, Any]:
    """The tests of `other` against `first` on their shared items (p-values not yet adjusted)."""
    shared = _shared(first, other)
    a = [first.items[k] for k in shared]
    b = [other.items[k] for k in shared]
    tests = _mcq_tests(a, b) if first.command == "mcq" else _gen_tests(a, b, first.language, cfg)
    return {
        "a": first.path,
        "b": other.path,
        "shared": len(shared),
        "only_a": len(first.items) - len(shared),
        "only_b": len(other.items) - len(shared),
        "tests": {name: diff.as_dict() for name, diff in tests.items()},
    }


def adjust(pairs: list[dict[str, Any]]) -> None:
    """Holm's adjustment over every test of the comparison, written as `p_holm`."""
    entries = [t for pair in pairs for t in pair["tests"].values()]
    for entry, adjusted in zip(entries, stats.holm([t["p_value"] for t in entries]), strict=True):
        entry["p_holm"] = adjusted


def table(pairs: list[dict[str, Any]]) -> list[str]:
    """The screen table: one block per pair, one line per metric."""
    lines = []
    for pair in pairs:
        lines.append(
            f"{pair['b']} vs {pair['a']}: {pair['shared']} shared items "
            f"({pair['only_a']} only in A, {pair['only_b']} only in B)"
        )
        lines.append(
            f"  {'metric':<16}{'A':>9}{'B':>9}  {'B-A [95% CI]':<28}{'p':>8}{'p_holm':>8}"
            f"{'MDD':>9}  test"
        )
        for name, t in pair["tests"].items():
            ci = f"{t['difference']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}]"
            lines.append(
                f"  {name:<16}{t['a']:>9.3f}{t['b']:>9.3f}  {ci:<28}{t['p_value']:>8.3g}"
                f"{t['p_holm']:>8.3g}{t['min_detectable']:>9.3f}  {t['test']}"
            )
    return lines


def run_compare(cfg: CompareConfig) -> int:
    """Load every run, test each later one against the first, write compare.json, print."""
    runs = [load_run(path) for path in cfg.runs]
    pairs = [compare_pair(runs[0], other, cfg) for other in runs[1:]]
    adjust(pairs)
    report = {
        "runs": cfg.runs,
        "pairs": pairs,
        "settings": {
            "level": stats.LEVEL,
            "resamples": cfg.resamples,
            "seed": cfg.seed,
            "power": stats.POWER,
        },
    }
    with staged_output(cfg.out, cfg.force, inputs=cfg.runs, stage="compare") as folder:
        atomic_write_json(folder / "compare.json", report)
        write_manifest(folder, "compare", {"config": cfg.model_dump()})
    print("\n".join(table(pairs)))
    tests = sum(len(p["tests"]) for p in pairs)
    print(
        f"{cfg.out}/compare.json: p_holm adjusts over all {tests} tests; MDD is the smallest "
        "difference detectable at this n (5% two-sided, 80% power)"
    )
    return 0
