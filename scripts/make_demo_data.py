"""Write the demo's derived data files (data/demo/, data/qa_en/meqsum_train.jsonl).

    .venv/bin/python scripts/make_demo_data.py [--shared ../shared/data]

- data/demo/headqa_facts.jsonl: the PT fact sheet (medmerge/base/facts.py) from the bundled
  HEAD-QA dev file; tests/base/test_facts.py checks the committed file equals it.
- data/qa_en/meqsum_train.jsonl: MeQSum items 300-999 (the SFT data) less those that share a
  13-gram with one of items 0-299 (MeQSum has near-duplicate questions); items 0-299 are the
  bundled meqsum_sample.jsonl, which the demo holds out for evaluation. Needs the full
  1,000-item MeQSum file (CC BY 4.0) from the shared data folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmerge.audit.leakage import ngrams, tokens
from medmerge.base.facts import AUDIT_NGRAM, headqa_fact_sheet

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = 300  # meqsum_sample.jsonl: the first 300 items


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{path.relative_to(REPO)}: {len(records)} records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    write_jsonl(
        REPO / "data/demo/headqa_facts.jsonl",
        headqa_fact_sheet(REPO / "data/mcq_en/dev_HEAD_EN.json"),
    )
    full = args.shared / "qa_en/meqsum.jsonl"
    rows = [json.loads(line) for line in full.read_text("utf-8").splitlines() if line.strip()]
    sample = (REPO / "data/qa_en/meqsum_sample.jsonl").read_text("utf-8").splitlines()
    if [json.loads(line) for line in sample] != rows[:HELD_OUT]:
        raise SystemExit(f"{full}: its first {HELD_OUT} items are not meqsum_sample.jsonl")
    held_out = set().union(*(_grams(r) for r in rows[:HELD_OUT]))
    train = [r for r in rows[HELD_OUT:] if not _grams(r) & held_out]
    print(f"MeQSum: {len(rows) - HELD_OUT - len(train)} of items {HELD_OUT}+ share a 13-gram")
    write_jsonl(REPO / "data/qa_en/meqsum_train.jsonl", train)


def _grams(row: dict) -> set:
    return ngrams(tokens(f"{row['question']} {row['summary']}"), AUDIT_NGRAM)


if __name__ == "__main__":
    main()
