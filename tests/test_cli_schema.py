"""The CLI is derived from the stage schemas: every flag has help, choices follow the registries."""

from __future__ import annotations

import argparse
from typing import Literal

import pytest
from pydantic import Field

from medmerge.cli import TABLE, build_parser, main
from medmerge.cli_schema import Command, Flag, LazyParser, Table
from medmerge.config import StageConfig


def _subcommands(parser: argparse.ArgumentParser, path=()):
    """(path, parser) of every group and command below `parser`, flags added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if isinstance(sub, LazyParser):
                    sub.populate()
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


@pytest.fixture(scope="module")
def subcommands():
    return dict(_subcommands(build_parser()))


def _flags(parser: argparse.ArgumentParser):
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def test_every_command_of_the_table_is_a_subcommand(subcommands):
    assert {cmd.path for cmd in TABLE.commands} | set(TABLE.groups) == set(subcommands)


def test_every_flag_has_help(subcommands):
    missing = [
        f"{' '.join(path)} {(action.option_strings or [action.dest])[0]}"
        for path, parser in subcommands.items()
        for action in _flags(parser)
        if not (action.help or "").strip()
    ]
    assert not missing, f"flags without help: {missing}"


def test_every_help_ends_with_one_example(subcommands):
    helps = {("medmerge",): build_parser().format_help()}
    helps.update({path: parser.format_help() for path, parser in subcommands.items()})
    for path, text in helps.items():
        tail = text.rstrip().splitlines()
        assert tail[-2] == "example:", path
        assert tail[-1].strip().startswith("medmerge "), path
        assert text.count("example:") == 1, path


def _shown_choices(parser: argparse.ArgumentParser, flag: str) -> list[str]:
    action = next(a for a in parser._actions if flag in a.option_strings)
    if action.choices is not None:
        return [str(c) for c in action.choices]
    return action.metavar.strip("{}").split(",")


def test_choices_shown_are_the_registries(subcommands):
    from medmerge.data.templates import TEMPLATES
    from medmerge.eval.config import DECODING_PRESETS
    from medmerge.eval.mcq_formats import LOADERS
    from medmerge.lora.methods import METHODS

    for path in [("merge",), ("verify",), ("eval", "gen"), ("eval", "mcq"), ("sweep",)]:
        assert _shown_choices(subcommands[path], "--method") == list(METHODS), path
    for path in [("train", "sft"), ("verify",), ("eval", "gen"), ("eval", "safety")]:
        assert _shown_choices(subcommands[path], "--template") == list(TEMPLATES), path
    assert _shown_choices(subcommands[("eval", "mcq")], "--format") == ["auto", *LOADERS]
    for path in [("eval", "gen"), ("eval", "safety")]:
        assert _shown_choices(subcommands[path], "--preset") == list(DECODING_PRESETS)
    for path in [("eval", "gen"), ("eval", "mcq"), ("score",)]:
        assert _shown_choices(subcommands[path], "--language") == ["auto", "en", "zh"]


def test_registry_choices_are_shown_not_enforced(capsys, tmp_path):
    """An unknown method still gets the stage's one-line did-you-mean error, as from YAML."""
    code = main(
        [
            *("merge", "--base", str(tmp_path), "--adapter", f"{tmp_path}=1"),
            *("--out", str(tmp_path / "o"), "--method", "tie"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "ties" in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- a schema the table has never seen


class ToyConfig(StageConfig):
    """A throwaway stage: each field below must appear as a flag without touching the CLI."""

    path_fields = ("out",)

    out: str = Field(description="where the toy writes")
    steps: int = Field(default=3, ge=1, description="how many toy steps")
    mode: Literal["fast", "slow"] = Field(default="fast", description="toy speed")
    files: list[str] = Field(default_factory=list, description="toy inputs")
    rank: int | Literal["auto"] | None = Field(default=None, description="toy rank")
    loud: bool = Field(default=False, description="shout")
    quiet: bool = Field(default=True, description="whisper")
    method: str = Field(default="linear", description="toy method")
    weights: dict[str, float] = Field(default_factory=dict, description="only via --set")


def _toy_runner(cfg: ToyConfig) -> int:
    _toy_runner.seen = cfg
    return 0


_TOY = Command(
    ("toy",),
    "a toy stage",
    "medmerge toy --out x",
    lambda: ToyConfig,
    f"{__name__}:_toy_runner",
    spellings=(Flag("files", "--file", metavar="FILE"),),
)


def _toy_parser() -> argparse.ArgumentParser:
    table = Table((_TOY,), {}, choices={"method": lambda: ["linear", "ties"]})
    parser = argparse.ArgumentParser(prog="medmerge")
    table.add_to(parser)
    return parser


def test_a_new_field_is_a_flag_with_its_type_choices_and_help():
    parser = _toy_parser()
    toy = dict(_subcommands(parser))[("toy",)]
    help_text = toy.format_help()
    for flag in ("--out", "--steps", "--mode", "--file", "--rank", "--loud", "--no-quiet"):
        assert flag in help_text, flag
    assert "how many toy steps (default: 3)" in help_text
    assert "--weights" not in help_text  # a mapping is reached through --set
    assert _shown_choices(toy, "--method") == ["linear", "ties"]
    assert _shown_choices(toy, "--mode") == ["fast", "slow"]

    args = parser.parse_args(
        [
            *("toy", "--out", "o", "--steps", "5", "--mode", "slow", "--file", "a", "b"),
            *("--rank", "auto", "--loud", "--no-quiet", "--set", "weights.pt=0.5"),
        ]
    )
    assert args.func(args) == 0
    cfg = _toy_runner.seen
    assert (cfg.out, cfg.steps, cfg.mode, cfg.files, cfg.rank) == (
        "o",
        5,
        "slow",
        ["a", "b"],
        "auto",
    )
    assert (cfg.loud, cfg.quiet, cfg.weights) == (True, False, {"pt": 0.5})


def test_a_flag_not_given_leaves_the_yaml_value(tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text("out: from_yaml\nsteps: 7\nloud: true\n", "utf-8")
    parser = _toy_parser()
    args = parser.parse_args(["toy", "--config", str(config), "--no-loud"])
    args.func(args)
    cfg = _toy_runner.seen
    assert cfg.steps == 7 and cfg.loud is False
    assert cfg.out == str(tmp_path / "from_yaml")


def test_a_field_type_the_rule_cannot_spell_is_named_when_listed():
    cmd = Command(("toy",), "t", "medmerge toy", lambda: ToyConfig, "x:y", flags=("weights",))
    with pytest.raises(TypeError, match=r"ToyConfig\.weights"):
        TABLE.specs(cmd, ToyConfig)


# ---------------------------------------------------------------- today's spellings keep working


def _config(argv: list[str]):
    args = build_parser().parse_args(argv)
    path = tuple(argv[: 2 if argv[0] in {p[0] for p in TABLE.groups} else 1])
    cmd = next(c for c in TABLE.commands if c.path == path)
    return TABLE.config(cmd, args)


def test_legacy_flags_map_to_the_config_keys_they_always_set():
    merge = _config(
        [
            *("merge", "--base", "b", "--adapter", "pt=0.3", "--adapter", "sft=0.7"),
            *("--out", "o", "--no-verify", "--adapter-rank", "auto", "--force", "--allow-pickle"),
        ]
    )
    assert [(a.path, a.weight) for a in merge.adapters] == [("pt", 0.3), ("sft", 0.7)]
    assert (merge.verify, merge.adapter_rank, merge.force, merge.allow_pickle) == (
        False,
        "auto",
        True,
        True,
    )
    train = _config(["train", "pt", "--base", "b", "--data", "x", "y", "--out", "o"])
    assert (train.stage, train.data, train.enable_thinking) == ("pt", ["x", "y"], True)
    assert _config(["train", "sft", "--base", "b", "--data", "x", "--out", "o"]).stage == "sft"
    gen = _config(
        [
            *("eval", "gen", "--model", "m", "--data", "d", "--out", "o", "--preset", "C"),
            *("--top-p", "0.5", "--seed", "3", "--enable-thinking", "--set", "decoding.top_k=4"),
        ]
    )
    assert (gen.decoding.preset, gen.decoding.top_p, gen.decoding.seed) == ("C", 0.5, 3)
    assert (gen.decoding.top_k, gen.enable_thinking) == (4, True)
    mcq = _config(
        [
            *("eval", "mcq", "--model", "m", "--data", "a", "b", "--out", "o", "--no-chat"),
            *("--medmcqa-cop-base", "1", "--seed", "5", "--max-new-tokens", "8"),
        ]
    )
    assert (mcq.chat, mcq.data, mcq.medmcqa_cop_base) == (False, ["a", "b"], 1)
    assert (mcq.seed, mcq.max_new_tokens) == (5, 8)
    safety = _config(["eval", "safety", "--model", "a", "--model", "b", "--out", "o"])
    assert [m.model for m in safety.models] == ["a", "b"]
    verify = _config(["verify", "--base", "b", "--merged", "m", "--no-logits", "--sample", "2"])
    assert (verify.logits, verify.sample, verify.enable_thinking) == (False, 2, None)
    audit = _config(["audit", "leakage", "--train", "t", "--eval", "e", "--out", "o"])
    assert (audit.train, audit.eval, audit.ngram) == (["t"], ["e"], 13)
    report = _config(["report", "runs/x"])
    assert (report.run_dir, report.out, report.force) == ("runs/x", None, False)
    assert _config(["demo"]).out == "runs/demo"
