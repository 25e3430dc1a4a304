"""Which loaded items an `eval mcq` run scores: split, id list, seeded sample, stratified limit.

Applied in this order, each keeping file order:
- split: PubMedQA `test` is the official 500 test PMIDs (pubmedqa_split.py), `train` the
  other PQA-L items; for other data, the items whose file is named for the split
  (`anatomy_test.csv`, `test/anatomy.csv`, `dev.json`).
- ids_file: a JSON object keyed by id (PubMedQA's test_ground_truth.json), a JSON list of
  ids, or one id per line.
- sample N with seed S: N items drawn without replacement by `random.Random(S)`.
- limit N: stratified by file (one subject per file in the MMLU / CMMLU layouts): the files
  take turns until N items are chosen, so a CMMLU folder with --limit 50 scores every
  subject, not only the first; within one file it is the first N, as lm-eval's --limit.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from medmerge.errors import ConfigError, DataError
from medmerge.eval.mcq_formats import McqItem
from medmerge.eval.pubmedqa_split import TEST_PMIDS

SPLITS = ("test", "train", "dev", "validation")


def _file_of(item: McqItem) -> Path:
    return Path(item.source.split(":", 1)[0]) if item.source else Path()


def _in_split(item: McqItem, split: str) -> bool:
    file = _file_of(item)
    names = [file.stem.lower(), *(p.lower() for p in file.parent.parts)]
    return any(n == split or n.endswith(f"_{split}") or n.startswith(f"{split}_") for n in names)


def by_split(items: Sequence[McqItem], split: str) -> list[McqItem]:
    """The items of one split (see the module's docstring)."""
    if items and all(i.subject == "pubmedqa" for i in items) and split in ("test", "train"):
        keep = [i for i in items if (i.id in TEST_PMIDS) == (split == "test")]
    else:
        keep = [i for i in items if _in_split(i, split)]
    if not keep:
        raise DataError(
            f"split {split!r}: none of the {len(items)} items is in it (PubMedQA test/train "
            "go by the official test PMIDs; other data by file names such as *_test.csv); "
            "give the split's file or drop --split"
        )
    return keep


def read_ids(path: str) -> set[str]:
    """Ids from a JSON object (its keys), a JSON list, or a text file of one id per line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the ids file ({exc.strerror}); check the path"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {line.strip() for line in text.splitlines() if line.strip()}
    if isinstance(data, dict):
        return {str(k) for k in data}
    if isinstance(data, list):
        return {str(v) for v in data}
    raise DataError(f"{path}: expected a JSON object keyed by id or a list of ids")


def by_ids(items: Sequence[McqItem], path: str) -> list[McqItem]:
    wanted = read_ids(path)
    keep = [i for i in items if i.id in wanted or i.id.rsplit("/", 1)[-1] in wanted]
    if not keep:
        raise DataError(
            f"{path}: none of its {len(wanted)} ids is among the {len(items)} items; "
            "check that the ids file belongs to this data"
        )
    if len(keep) < len(wanted):
        missing = len(wanted) - len(keep)
        print(
            f"medmerge: warning: {path}: {missing} of {len(wanted)} ids are not in the data; "
            f"scoring the {len(keep)} that are",
            file=sys.stderr,
        )
    return keep


def sample(items: Sequence[McqItem], n: int, seed: int) -> list[McqItem]:
    """n items drawn without replacement with a seeded generator, in file order."""
    if n > len(items):
        raise ConfigError(f"--sample {n} is more than the {len(items)} items; lower it")
    chosen = set(random.Random(seed).sample(range(len(items)), n))
    return [item for index, item in enumerate(items) if index in chosen]


def stratified_limit(items: Sequence[McqItem], n: int) -> list[McqItem]:
    """At most n items, the files (subjects) taking turns, file order within each."""
    by_subject: dict[Path, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_subject[_file_of(item)].append(index)
    chosen: set[int] = set()
    for depth in range(max(map(len, by_subject.values()), default=0)):
        for queue in by_subject.values():
            if depth < len(queue) and len(chosen) < n:
                chosen.add(queue[depth])
    return [item for index, item in enumerate(items) if index in chosen]


def select(
    items: Sequence[McqItem],
    split: str | None,
    ids_file: str | None,
    sample_size: int | None,
    seed: int,
    limit: int | None,
) -> list[McqItem]:
    """The items a run scores, in file order (split, ids, sample, then stratified limit)."""
    chosen = list(items)
    if split is not None:
        chosen = by_split(chosen, split)
    if ids_file is not None:
        chosen = by_ids(chosen, ids_file)
    if sample_size is not None:
        chosen = sample(chosen, sample_size, seed)
    if limit is not None:
        chosen = stratified_limit(chosen, limit)
    return chosen
