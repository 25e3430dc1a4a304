"""User errors from the CLI: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import json

import pytest

from medmerge.cli import main


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("medmerge: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def sft_args(tiny_base, tmp_path):
    def args(data, *extra: str) -> list[str]:
        return [
            "train",
            "sft",
            "--base",
            str(tiny_base),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            *extra,
        ]

    return args


def test_missing_data_file(capsys, sft_args, tmp_path):
    code, err = _run(capsys, sft_args(tmp_path / "nope.json"))
    _one_line_error(code, err, "nope.json")
    assert not (tmp_path / "out").exists()


def test_malformed_json_line(capsys, sft_args, tmp_path):
    data = tmp_path / "qa.jsonl"
    good = json.dumps({"instruction": "q", "input": "", "output": "a"})
    data.write_text(f"{good}\n{good}\n{{not json\n")
    code, err = _run(capsys, sft_args(data))
    _one_line_error(code, err, "qa.jsonl:3")


def test_missing_csv_column(capsys, tiny_base, tmp_path):
    data = tmp_path / "texts.csv"
    data.write_text("label,abstract\n1,some text\n")
    argv = [
        "train",
        "pt",
        "--base",
        str(tiny_base),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
    ]
    code, err = _run(capsys, [*argv, "--set", "text_column=abstracts"])
    _one_line_error(code, err, "abstracts", "abstract")


def test_unknown_template(capsys, sft_args, repo):
    code, err = _run(
        capsys, sft_args(repo / "data/sft_en/genmedgpt_sample.json", "--template", "qwen3_nothnk")
    )
    _one_line_error(code, err, "qwen3_nothnk", "qwen3_nothink")


def test_base_that_is_not_a_model(capsys, tmp_path, repo):
    (tmp_path / "notamodel").mkdir()
    argv = [
        "train",
        "pt",
        "--base",
        str(tmp_path / "notamodel"),
        "--data",
        str(repo / "data/pt/huatuo_zh_text.jsonl"),
    ]
    code, err = _run(capsys, [*argv, "--out", str(tmp_path / "o")])
    _one_line_error(code, err, "notamodel", "config.json")


def test_missing_required_key(capsys, tmp_path):
    code, err = _run(capsys, ["train", "pt", "--out", str(tmp_path / "o")])
    _one_line_error(code, err, "missing required key 'base'", "missing required key 'data'")


def test_unknown_config_key_from_set(capsys, sft_args, repo):
    code, err = _run(
        capsys, sft_args(repo / "data/sft_en/genmedgpt_sample.json", "--set", "lora.alfa=4")
    )
    _one_line_error(code, err, "lora.alfa", "did you mean 'alpha'")


def test_debug_shows_the_traceback(tmp_path):
    from medmerge.errors import MedmergeError

    with pytest.raises(MedmergeError):
        main(
            [
                "train",
                "pt",
                "--base",
                str(tmp_path),
                "--data",
                "x.txt",
                "--out",
                str(tmp_path / "o"),
                "--debug",
            ]
        )
