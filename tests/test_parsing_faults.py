"""Hostile text inputs: YAML configs, JSON lines and chat templates, each one line with exit 2.

YAML aliases are bounded (a recursive alias or a billion laughs ran until killed), JSON lines
split on '\\n' only (medmerge's own writer leaves U+2028 unescaped inside strings), a record
has a size bound, and a tokenizer's Jinja chat template renders in the sandbox within a time
and size bound.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from helpers import assert_one_error
from medmerge.audit.records import read_records, write_without
from medmerge.cli import main
from medmerge.config import parse_set_overrides
from medmerge.data import templates
from medmerge.data.records import iter_json_records

SEPARATORS = "a\u2028b\u2029c\u0085d\x0be\x0cf\x1cg"


def _one_error(code: int, capsys, *needles: str) -> str:
    return assert_one_error(code, capsys.readouterr().err, *needles)


# ------------------------------------------------------------------ YAML


def _laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join([*lines, f"base: *l{levels - 1}", ""])


YAML_FAULTS = {
    "recursive-alias": ("base: x\nadapters: &a [*a]\n", (":2:", "recursive")),
    "recursive-mapping": ("a: &a {b: *a}\n", (":1:", "recursive")),
    "billion-laughs": (_laughs(), ("billion laughs", "100,000")),
    "not-a-mapping": ("- a\n- b\n", ("must be a mapping", "list")),
    "scalar": ("just text\n", ("must be a mapping", "str")),
    "deeply-nested": ("a: " + "[" * 5000 + "]" * 5000 + "\n", ()),
}


@pytest.mark.parametrize("fault", sorted(YAML_FAULTS))
def test_yaml_config_faults(fault, tmp_path, capsys):
    text, needles = YAML_FAULTS[fault]
    config = tmp_path / "config.yaml"
    config.write_text(text, "utf-8")
    started = time.monotonic()
    code = main(["merge", "--config", str(config), "--out", str(tmp_path / "out")])
    _one_error(code, capsys, "config.yaml", *needles)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_yaml_aliases_within_the_bound_still_work(tmp_path):
    from medmerge.config import read_yaml

    config = tmp_path / "config.yaml"
    config.write_text("common: &c {r: 8, alpha: 16}\npt: {<<: *c, r: 4}\nsft: *c\n", "utf-8")
    values = read_yaml(config)
    assert values["pt"] == {"r": 4, "alpha": 16} and values["sft"] == {"r": 8, "alpha": 16}


def test_set_override_with_recursive_alias_stays_a_string():
    assert parse_set_overrides(["note=&a [*a]"]) == {"note": "&a [*a]"}


# ------------------------------------------------------------------ JSON lines


def _separator_records(tmp_path: Path) -> Path:
    file = tmp_path / "items.jsonl"
    rows = [{"question": f"q{i} {SEPARATORS}", "answer": f"r{i}"} for i in range(3)]
    file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return file


def test_json_lines_split_on_newline_only(tmp_path):
    file = _separator_records(tmp_path)
    records = list(iter_json_records(file))
    assert [line for line, _ in records] == [1, 2, 3]
    assert records[1][1]["question"] == f"q1 {SEPARATORS}"


def test_audit_records_split_on_newline_only(tmp_path):
    file = _separator_records(tmp_path)
    records = read_records(file)
    assert [rid for rid, _ in records] == ["1", "2", "3"]
    assert SEPARATORS in records[0][1]
    kept = write_without(file, {"2"}, tmp_path / "kept.jsonl")
    lines = (tmp_path / "kept.jsonl").read_text("utf-8").split("\n")
    assert kept == 2 and [json.loads(line)["answer"] for line in lines if line] == ["r0", "r2"]


def _train_pt(tiny_base, data: Path, out: Path) -> list[str]:
    return ["train", "pt", "--base", str(tiny_base), "--data", str(data), "--out", str(out)]


def test_fifty_megabyte_json_line(tiny_base, tmp_path, capsys):
    data = tmp_path / "big.jsonl"
    document = json.dumps({"text": "fever " * (50 * 10**6 // 6)})
    data.write_text(json.dumps({"text": "a short one"}) + "\n" + document + "\n", "utf-8")
    started = time.monotonic()
    code = main(_train_pt(tiny_base, data, tmp_path / "out"))
    _one_error(code, capsys, "big.jsonl:2", "50,000,0", "split it")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()


def test_fifty_megabyte_text_document(tiny_base, tmp_path, capsys):
    data = tmp_path / "big.txt"
    data.write_text("first document\n\n\n" + "fever " * (50 * 10**6 // 6) + "\n", "utf-8")
    code = main(_train_pt(tiny_base, data, tmp_path / "out"))
    _one_error(code, capsys, "big.txt:4", "split it")


def test_data_file_symlink_loop(tmp_path):
    from medmerge.data.readers import read_pt_texts
    from medmerge.errors import DataError

    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    with pytest.raises(DataError, match=r"a\.jsonl: a symbolic link that leads nowhere"):
        read_pt_texts(tmp_path / "a.jsonl")


# ------------------------------------------------------------------ Jinja chat templates

TEMPLATE_FAULTS = {
    "sandbox-escape": (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        ("chat_template.jinja", "unsafe", "sandbox"),
    ),
    "namespace-dunder": (
        "{% set ns = namespace() %}{% set ns._x = 1 %}{{ ns }}",
        ("chat_template.jinja", "sandbox"),
    ),
    "endless-loop": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        ("chat_template.jinja", "ran over", "genmedgpt_sample.json:"),
    ),
    "huge-output": (  # not a constant, which Jinja would fold (slowly) when compiling
        "{{ 'x' * (messages | length * 100000000) }}",
        ("chat_template.jinja", "produced over", "characters"),
    ),
    "growing-output": (
        "{% for a in range(100000) %}{{ 'y' * 100000 }}{% endfor %}",
        ("chat_template.jinja", "produced over"),
    ),
    "template-raises": (
        "{{ raise_exception('Conversation roles must alternate') }}",
        ("genmedgpt_sample.json:", "roles must alternate", "chat_template.jinja"),
    ),
    "template-type-error": ("{{ 1 + 'a' }}", ("chat_template.jinja", "TypeError")),
    "syntax-error": ("{% for %}", ("chat_template.jinja", "not valid Jinja", "line 1")),
    "undefined-attribute": (
        "{{ messages[0].content.foo.bar }}",
        ("chat_template.jinja", "UndefinedError"),
    ),
}


@pytest.mark.parametrize("fault", sorted(TEMPLATE_FAULTS))
def test_tokenizer_chat_template_faults(fault, tiny_base, repo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(templates, "RENDER_SECONDS", 1.0)
    source, needles = TEMPLATE_FAULTS[fault]
    base = Path(shutil.copytree(tiny_base, tmp_path / "base"))
    (base / "chat_template.jinja").write_text(source, "utf-8")
    data = repo / "data/sft_en/genmedgpt_sample.json"
    argv = ["train", "sft", "--base", str(base), "--data", str(data), "--template", "tokenizer"]
    started = time.monotonic()
    code = main([*argv, "--out", str(tmp_path / "out"), "--set", "max_samples=2"])
    _one_error(code, capsys, *needles)
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()


def test_render_bound_leaves_tracing_as_it_was(tiny_base):
    """The bound's trace function is removed again (a debugger's or coverage's is restored)."""
    import sys

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    before = sys.gettrace()
    messages = [{"role": "user", "content": "fever?"}]
    text = templates.render_chat_template(tokenizer, messages, "x", add_generation_prompt=True)
    assert text == tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert sys.gettrace() is before
