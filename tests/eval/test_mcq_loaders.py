"""A loader is one entry in mcq_formats.LOADERS: its detection rule travels with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmerge.errors import DataError
from medmerge.eval import mcq_formats
from medmerge.eval.mcq_data import detect_format, load_mcq
from medmerge.eval.mcq_formats import LETTERS, Loader, make_item, record_has


def _load_pipe(file: Path, options: dict) -> list:
    """question|A|B|answer-letter, one per line."""
    items = []
    for line, text in enumerate(file.read_text("utf-8").splitlines(), 1):
        question, *options_, answer = text.split("|")
        items.append(make_item(f"{file}:{line}", line, question, options_, {LETTERS.index(answer)}))
    return items


def test_a_new_loader_is_detected_and_loaded_from_its_own_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(
        mcq_formats.LOADERS, "pipe", Loader(_load_pipe, (".psv",), lambda probe: True)
    )
    file = tmp_path / "quiz.psv"
    file.write_text("Which is a bone?|femur|aorta|A\nWhich pumps blood?|lung|heart|B\n", "utf-8")

    assert detect_format(file) == "pipe"
    items = load_mcq([str(tmp_path)])  # the folder is expanded by the registry's suffixes too
    assert [(i.question, i.options, i.answer_index) for i in items] == [
        ("Which is a bone?", ("femur", "aorta"), 0),
        ("Which pumps blood?", ("lung", "heart"), 1),
    ]
    assert load_mcq([str(file)], "pipe") == items


def test_priority_decides_between_rules_that_both_accept(tmp_path, monkeypatch):
    file = tmp_path / "medqa.jsonl"
    file.write_text(
        '{"question": "q", "options": {"A": "x", "B": "y"}, "answer_idx": "A", "extra": 1}\n',
        "utf-8",
    )
    assert detect_format(file) == "medqa"
    eager = Loader(mcq_formats.load_medqa, (".jsonl",), record_has("extra"), priority=1)
    monkeypatch.setitem(mcq_formats.LOADERS, "eager", eager)
    assert detect_format(file) == "eager"
    monkeypatch.setitem(mcq_formats.LOADERS, "eager", Loader(eager.load, (".jsonl",), eager.detect))
    assert detect_format(file) == "medqa"  # at the default 50, medqa (30) comes first


def test_a_file_type_no_loader_detects_is_refused(tmp_path):
    file = tmp_path / "quiz.txt"
    file.write_text("anything", "utf-8")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*\.parquet"):
        detect_format(file)
