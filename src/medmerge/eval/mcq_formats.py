"""Loaders for the published multiple-choice formats, auto-detected or named.

Every loader yields `McqItem`s with 2-10 options and the set of right option indices; a
malformed record is a DataError naming file:line. Formats:
- medqa:   JSON lines {question, options: {A: text, ...} (A-D or A-E), answer_idx: letter}
- medmcqa: JSON lines {question, opa..opd, cop}; cop is 1-based in the original release and
  0-based on Hugging Face. A file with a cop of 0 is 0-based, one with a cop of 4 is 1-based;
  otherwise pass medmcqa_cop_base.
- pubmedqa: ori_pqal.json {PMID: {QUESTION, CONTEXTS, final_decision, LONG_ANSWER}}; options
  yes/no/maybe; the question shown is the contexts, then the question.
- mmlu:    the original header-less CSV (question, A, B, C, D, answer letter); subject = file
  name without _dev/_val/_test. mmlu_hf: {question, subject, choices, answer index} as JSON
  lines or parquet.
- cmmlu:   CSV with header `,Question,A,B,C,D,Answer`; subject = file name.
- cmexam:  CSV with Question, Options (lines "A text"), Answer (one or more letters, an exact set).
- ceval:   CSV with header id,question,A,B,C,D,answer[,explanation]; subject = file name.
- headqa:  JSON {exams: {name: {data: [{qid, qtext, ra, answers: [{aid, atext}]}]}}}.
- columns: any JSON lines/array/CSV/parquet with a mapping: question, options (a list field)
  or option_columns ("A,B,C,D"), answer (letter, 0-based index or option text), id, subject.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from medmerge.data.records import iter_json_records, parse_json_document, read_text
from medmerge.errors import ConfigError, DataError

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class McqItem:
    """One question: options in order and the set of right indices (several for CMExam)."""

    id: str
    question: str
    options: tuple[str, ...]
    answers: frozenset[int]
    subject: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def answer_index(self) -> int:
        return min(self.answers)


def make_item(
    source: str,
    id: str,
    question: Any,
    options: list[Any],
    answers: set[int],
    subject: str = "",
    **extra: Any,
) -> McqItem:
    """Validate one record's parts; every problem names its file:line."""
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{source}: empty or missing question text; fix the record")
    if not 2 <= len(options) <= 10:
        raise DataError(f"{source}: {len(options)} options; multiple choice needs 2 to 10")
    texts = []
    for index, option in enumerate(options):
        if option is None or (isinstance(option, float) and option != option):
            raise DataError(f"{source}: option {LETTERS[index]} is empty; fix the record")
        texts.append(str(option).strip())
    if not answers or any(not 0 <= a < len(texts) for a in answers):
        raise DataError(
            f"{source}: answer {sorted(answers)} is not one of the {len(texts)} options"
        )
    return McqItem(
        str(id), question.strip(), tuple(texts), frozenset(answers), subject, source, extra
    )


def letter_index(value: Any, count: int, source: str) -> int:
    text = str(value).strip().upper()
    if len(text) != 1 or text not in LETTERS[:count]:
        raise DataError(f"{source}: answer {value!r} is not a letter A-{LETTERS[count - 1]}")
    return LETTERS.index(text)


def _subject_from(file: Path) -> str:
    return re.sub(r"_(dev|val|test|train)$", "", file.stem)


def _line_of(text: str, needle: str, start: int = 0) -> tuple[int, int]:
    """(1-based line, offset) of the first `needle` at or after `start`."""
    offset = text.find(needle, start)
    offset = start if offset < 0 else offset
    return text.count("\n", 0, offset) + 1, offset


# ------------------------------------------------------------------ JSON formats


def load_medqa(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    for line, record in iter_json_records(file):
        source = f"{file}:{line}"
        choices = record.get("options")
        if not isinstance(choices, dict) or not choices:
            raise DataError(f"{source}: 'options' must be a map of letters to texts (MedQA)")
        letters = sorted(choices)
        if "".join(letters) != LETTERS[: len(letters)]:
            raise DataError(f"{source}: option letters {letters} are not A, B, C, ... in order")
        answer = letter_index(record.get("answer_idx"), len(letters), source)
        yield make_item(
            source,
            record.get("id", line),
            record.get("question"),
            [choices[k] for k in letters],
            {answer},
            record.get("meta_info", ""),
        )


def _medmcqa_base(file: Path, records: list[tuple[int, dict]], base: int | None) -> int:
    cops = {r.get("cop") for _, r in records}
    if base is not None:
        return base
    if 0 in cops and 4 in cops:
        raise DataError(f"{file}: cop values 0 and 4 both occur; cop must be 0-3 or 1-4")
    if 0 in cops:
        return 0
    if 4 in cops:
        return 1
    raise DataError(
        f"{file}: cannot tell whether cop is 1-based (original release) or 0-based (Hugging "
        "Face): no cop is 0 or 4; pass --set medmcqa_cop_base=1 or 0"
    )


def load_medmcqa(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    records = list(iter_json_records(file))
    base = _medmcqa_base(file, records, options.get("medmcqa_cop_base"))
    for line, record in records:
        source = f"{file}:{line}"
        cop = record.get("cop")
        if not isinstance(cop, int) or isinstance(cop, bool):
            raise DataError(f"{source}: 'cop' must be an integer answer index, got {cop!r}")
        texts = [record.get(k) for k in ("opa", "opb", "opc", "opd")]
        yield make_item(
            source,
            record.get("id", line),
            record.get("question"),
            texts,
            {cop - base},
            record.get("subject_name") or "",
        )


def load_mmlu_hf(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    for source, record in _records(file):
        choices, answer = record.get("choices"), record.get("answer")
        if not isinstance(choices, list | tuple) and not hasattr(choices, "tolist"):
            raise DataError(f"{source}: 'choices' must be a list of option texts (MMLU)")
        choices = list(choices.tolist() if hasattr(choices, "tolist") else choices)
        if isinstance(answer, str):
            index = letter_index(answer, len(choices), source)
        elif isinstance(answer, int) and not isinstance(answer, bool):
            index = answer
        else:
            raise DataError(f"{source}: 'answer' must be an option index, got {answer!r}")
        yield make_item(
            source,
            record.get("id", source.rsplit(":", 1)[-1]),
            record.get("question"),
            choices,
            {index},
            record.get("subject") or _subject_from(file),
        )


def load_pubmedqa(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    text = read_text(file)
    data = parse_json_document(file, text)
    if not isinstance(data, dict):
        raise DataError(f"{file}:1: expected an object keyed by PMID (PubMedQA ori_pqal.json)")
    choices = ["yes", "no", "maybe"]
    for pmid, record in data.items():
        line, _ = _line_of(text, f'"{pmid}"')
        source = f"{file}:{line}"
        if not isinstance(record, dict) or "QUESTION" not in record:
            raise DataError(f"{source}: PMID {pmid} has no QUESTION; not a PubMedQA record")
        decision = record.get("final_decision")
        if decision not in choices:
            raise DataError(f"{source}: final_decision {decision!r} is not yes/no/maybe")
        contexts = record.get("CONTEXTS") or []
        if not isinstance(contexts, list):
            raise DataError(f"{source}: CONTEXTS must be a list of strings")
        question = "\n".join([*map(str, contexts), str(record["QUESTION"])])
        yield make_item(
            source,
            pmid,
            question,
            choices,
            {choices.index(decision)},
            "pubmedqa",
            long_answer=record.get("LONG_ANSWER", ""),
            contexts=[str(c) for c in contexts],  # lm-eval's pubmedqa prompt keeps them apart
            question_only=str(record["QUESTION"]),
        )


def load_headqa(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    text = read_text(file)
    data = parse_json_document(file, text)
    exams = data.get("exams") if isinstance(data, dict) else None
    if not isinstance(exams, dict):
        raise DataError(f"{file}:1: expected {{'exams': {{...}}}} (HEAD-QA)")
    for name, exam in exams.items():
        _, exam_at = _line_of(text, f'"{name}"')
        for question in exam.get("data", []):
            yield _headqa_item(file, text, exam_at, name, exam, question)


def _headqa_item(file: Path, text: str, exam_at: int, name: str, exam: dict, q: Any) -> McqItem:
    qid = q.get("qid") if isinstance(q, dict) else None
    line, _ = _line_of(text, f'"qid": "{qid}"', exam_at)
    source = f"{file}:{line} ({name} qid {qid})"
    if not isinstance(q, dict) or not isinstance(q.get("answers"), list):
        raise DataError(f"{source}: question needs an 'answers' list (HEAD-QA)")
    ids = [str(a.get("aid")) for a in q["answers"]]
    if str(q.get("ra")) not in ids:
        raise DataError(f"{source}: ra {q.get('ra')!r} is none of the answer ids {ids}")
    texts = [a.get("atext") for a in q["answers"]]
    return make_item(
        source,
        f"{name}/{qid}",
        q.get("qtext"),
        texts,
        {ids.index(str(q["ra"]))},
        exam.get("category") or name,
    )


# ------------------------------------------------------------------ CSV formats


def _csv_rows(file: Path) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(read_text(file), newline=""))
    start = 1
    for row in reader:
        if any(cell.strip() for cell in row):
            yield start, row
        start = reader.line_num + 1


def _csv_dicts(file: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict[str, str]]]:
    rows = _csv_rows(file)
    _, header = next(rows)
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(f"{file}:1: missing columns {missing}; header is {header}")
    for line, row in rows:
        if len(row) != len(header):
            raise DataError(f"{file}:{line}: {len(row)} cells, the header has {len(header)}")
        yield f"{file}:{line}", dict(zip(header, row, strict=True))


def _lettered_csv(file: Path, question: str, answer: str, id_column: str) -> Iterator[McqItem]:
    subject = _subject_from(file)
    for source, row in _csv_dicts(file, (question, "A", "B", "C", "D", answer)):
        letters = [k for k in LETTERS if k in row]
        index = letter_index(row[answer], len(letters), source)
        yield make_item(
            source,
            f"{subject}/{row.get(id_column) or source.rsplit(':', 1)[-1]}",
            row[question],
            [row[k] for k in letters],
            {index},
            subject,
        )


def load_cmmlu(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    return _lettered_csv(file, "Question", "Answer", "")


def load_ceval(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    return _lettered_csv(file, "question", "answer", "id")


def load_mmlu(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    subject = _subject_from(file)
    for line, row in _csv_rows(file):
        source = f"{file}:{line}"
        if len(row) != 6:
            raise DataError(f"{source}: {len(row)} cells; MMLU rows are question,A,B,C,D,answer")
        index = letter_index(row[-1], len(row) - 2, source)
        yield make_item(source, line, row[0], row[1:-1], {index}, subject)


_CMEXAM_OPTION = re.compile(r"^\s*([A-J])[\s.．、:：)]\s*(.*)$")


def load_cmexam(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    for source, row in _csv_dicts(file, ("Question", "Options", "Answer")):
        texts, letters = [], []
        for part in row["Options"].splitlines():
            if not part.strip():
                continue
            match = _CMEXAM_OPTION.match(part)
            if match is None:
                raise DataError(f"{source}: option line {part!r} does not start with a letter")
            letters.append(match.group(1))
            texts.append(match.group(2))
        if "".join(letters) != LETTERS[: len(letters)]:
            raise DataError(f"{source}: option letters {letters} are not A, B, C, ... in order")
        answer = re.sub(r"[\s,，、]", "", row["Answer"].upper())
        if not answer:
            raise DataError(f"{source}: empty Answer; CMExam answers are one or more letters")
        answers = {letter_index(a, len(texts), source) for a in answer}
        yield make_item(
            source, source.rsplit(":", 1)[-1], row["Question"], texts, answers, "cmexam"
        )


# ------------------------------------------------------------------ generic mapping


def _records(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file:line, record) from JSON lines/array, CSV with a header, or parquet (row numbers)."""
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(file).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"{file}: unreadable parquet ({exc}); re-export the file") from None
        for row_number, row in enumerate(rows, 1):
            yield f"{file}:row {row_number}", row
    elif suffix == ".csv":
        header_rows = _csv_rows(file)
        _, header = next(header_rows)
        for source, row in _csv_dicts(file, tuple(header)):
            yield source, row
    else:
        for line, record in iter_json_records(file):
            yield f"{file}:{line}", record


def field_at(record: dict[str, Any], name: str) -> Any:
    """A field by name, or through a dotted path into nested objects (`data.question` of
    MultiMedQA's `{id, data: {...}}`); None when absent. A literal key with dots wins."""
    if name in record or "." not in name:
        return record.get(name)
    value: Any = record
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def load_columns(file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
    columns = options.get("columns") or {}
    if "question" not in columns or "answer" not in columns:
        raise ConfigError(
            "format 'columns' needs columns.question and columns.answer (and options or option_columns)"
        )
    for source, record in _records(file):
        if "options" in columns:
            opts = field_at(record, columns["options"])
            opts = opts.tolist() if hasattr(opts, "tolist") else opts
            if not isinstance(opts, list):
                raise DataError(f"{source}: field {columns['options']!r} must be a list of options")
        else:
            names = columns.get("option_columns", "A,B,C,D").split(",")
            opts = [field_at(record, name.strip()) for name in names]
        yield make_item(
            source,
            _or(field_at(record, columns.get("id", "id")), source.rsplit(":", 1)[-1]),
            field_at(record, columns["question"]),
            opts,
            {_answer_index(field_at(record, columns["answer"]), opts, source)},
            str(field_at(record, columns.get("subject", "subject")) or ""),
        )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _answer_index(value: Any, options: list[Any], source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return LETTERS.index(text.upper())
    if text in [str(o).strip() for o in options]:
        return [str(o).strip() for o in options].index(text)
    raise DataError(f"{source}: answer {value!r} is not a letter, an index or an option text")


# ------------------------------------------------------------------ the registry


class FileProbe:
    """What format detection looks at, read lazily: suffix, CSV header, JSON document, first record."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.suffix = file.suffix.lower()

    @cached_property
    def csv_header(self) -> list[str]:
        return next(_csv_rows(self.file))[1]

    @cached_property
    def document(self) -> Any:
        """The whole file as one JSON document; None when it is not one (e.g. JSON lines)."""
        try:
            return json.loads(read_text(self.file))
        except json.JSONDecodeError:
            return None

    @cached_property
    def first_record(self) -> tuple[int, dict[str, Any]]:
        return next(iter_json_records(self.file))

    @property
    def record_keys(self) -> set[str]:
        """The first record's fields; none for one JSON object over several lines, which is no
        list of records (PubMedQA's test_ground_truth.json is valid JSON, not JSON lines)."""
        if isinstance(self.document, dict) and "\n" in read_text(self.file).strip():
            return set()
        return set(self.first_record[1])


def record_has(*keys: str) -> Callable[[FileProbe], bool]:
    """A detection rule: the first JSON record has all of `keys`."""
    return lambda probe: set(keys) <= probe.record_keys


def _is_pubmedqa(probe: FileProbe) -> bool:
    data = probe.document
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "QUESTION" in v for v in list(data.values())[:5])
    )


def _is_headqa(probe: FileProbe) -> bool:
    return isinstance(probe.document, dict) and isinstance(probe.document.get("exams"), dict)


def _is_cmmlu(probe: FileProbe) -> bool:
    header = probe.csv_header
    return bool(header) and header[0] == "" and "Question" in header and "Answer" in header


def _is_mmlu(probe: FileProbe) -> bool:
    header = probe.csv_header
    return len(header) >= 4 and header[-1].strip().upper() in LETTERS


@dataclass(frozen=True)
class Loader:
    """One format: how to load it and how auto-detection recognises it.

    Detection tries the loaders whose `suffixes` include the file's, lowest `priority` first,
    and takes the first whose `detect` accepts the file; `detect=None` means by name only.
    """

    load: Callable[[Path, dict[str, Any]], Iterator[McqItem]]
    suffixes: tuple[str, ...] = ()
    detect: Callable[[FileProbe], bool] | None = None
    priority: int = 50

    def __call__(self, file: Path, options: dict[str, Any]) -> Iterator[McqItem]:
        return self.load(file, options)


_JSON = (".json", ".jsonl")

LOADERS: dict[str, Loader] = {
    "medqa": Loader(load_medqa, _JSON, record_has("options", "answer_idx"), 30),
    "medmcqa": Loader(load_medmcqa, _JSON, record_has("opa", "cop"), 40),
    "pubmedqa": Loader(load_pubmedqa, (".json",), _is_pubmedqa, 20),
    "mmlu": Loader(load_mmlu, (".csv",), _is_mmlu, 90),
    "mmlu_hf": Loader(
        load_mmlu_hf,
        (".parquet", *_JSON),
        lambda p: p.suffix == ".parquet" or {"choices", "answer"} <= p.record_keys,
        50,
    ),
    "cmmlu": Loader(load_cmmlu, (".csv",), _is_cmmlu, 10),
    "cmexam": Loader(
        load_cmexam, (".csv",), lambda p: {"Question", "Options"} <= set(p.csv_header), 20
    ),
    "ceval": Loader(
        load_ceval, (".csv",), lambda p: {"question", "answer", "A", "B"} <= set(p.csv_header), 30
    ),
    "headqa": Loader(load_headqa, (".json",), _is_headqa, 10),
    "columns": Loader(load_columns),
}
