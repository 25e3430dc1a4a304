"""Goldens for medmerge's ties / dare_ties / magnitude_prune / linear from mergekit itself.

Run in mergekit's own venv (never the project's):
    python3 -m venv /work/venvs/mergekit
    /work/venvs/mergekit/bin/pip install torch==2.13.0 mergekit==0.1.5
    /work/venvs/mergekit/bin/python scripts/goldens/mergekit_methods.py
It writes tests/goldens/mergekit/methods.json: the inputs (fp64 deltas from a fixed seed,
unequal weights) and mergekit's outputs; tests/merge/test_mergekit_goldens.py compares
medmerge's methods against them. DARE's random mask comes from another generator in each
tool, so dare_ties is recorded at density 1 (sign election and mergekit's normalize: false)
and DARE's L1 rescale is tested by its invariant.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorEntry, TensorGroup
from mergekit.sparsify import SparsificationMethod, sparsify

OUT = Path(__file__).resolve().parents[2] / "tests" / "goldens" / "mergekit" / "methods.json"
CASES = [  # (mergekit method, weights, density)
    ("ties", (0.3, 0.7), 1.0),
    ("ties", (0.3, 0.7), 0.5),
    ("ties", (0.2, 0.5, 1.1), 0.3),
    ("dare_ties", (0.3, 0.7), 1.0),
    ("dare_ties", (0.2, 0.5, 1.1), 1.0),
    ("task_arithmetic", (0.3, 0.7), 1.0),
]


def _deltas(count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    deltas = [torch.randn(6, 7, generator=generator, dtype=torch.float64) for _ in range(count)]
    deltas[0][0, :3] = 0.0  # exact zeros never agree with the elected sign
    return deltas


def _merge(method: str, weights, density: float, deltas) -> torch.Tensor:
    base = torch.zeros_like(deltas[0])
    entries = [TensorEntry("base", base, is_base=True)]
    entries += [TensorEntry(f"m{i}", base + d) for i, d in enumerate(deltas)]
    merge = registry.get(method)
    parameters = {p.name: p.default for p in merge.spec.parameters if p.scope.name == "SHARED"}
    ids = [f"m{i}" for i in range(len(deltas))]
    parameters["weight"] = dict(zip(ids, weights, strict=True))
    parameters["density"] = dict.fromkeys(ids, density)
    return merge.merge_group(TensorGroup(entries), **parameters) - base


def main() -> None:
    cases = []
    for index, (method, weights, density) in enumerate(CASES):
        deltas = _deltas(len(weights), seed=index)
        merged = _merge(method, weights, density, deltas)
        cases.append(
            {
                "method": method,
                "weights": list(weights),
                "density": density,
                "deltas": [d.tolist() for d in deltas],
                "merged": merged.tolist(),
            }
        )
    delta = _deltas(1, seed=99)[0]
    pruned = sparsify(delta, density=0.4, method=SparsificationMethod.magnitude)
    record = {
        "mergekit": version("mergekit"),
        "torch": torch.__version__,
        "cases": cases,
        "magnitude": {"delta": delta.tolist(), "density": 0.4, "kept": pruned.tolist()},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases, mergekit {record['mergekit']})")


if __name__ == "__main__":
    main()
