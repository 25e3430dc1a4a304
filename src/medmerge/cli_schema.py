"""Command-line flags derived from the stage schemas: a table row per subcommand, no field twice.

A `Command` names its schema and runner (as "module:attr", imported only when the command is
used), and which fields are flags; each flag's type, choices, default and help come from the
pydantic field (`Field(description=...)`). A subcommand's flags are added the first time its
parser is used, so `medmerge --help` and every other command import no stage but their own.
"""

from __future__ import annotations

import argparse
import importlib
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

_SCALARS = (str, int, float)


@dataclass(frozen=True)
class Flag:
    """A config key spelled another way than the rule (`--<leaf-name>`, typed from the field)."""

    key: str  # dotted config key, e.g. "adapters" or "decoding.top_p"
    name: str | None = None  # e.g. "--adapter"; default --<last part of key>
    type: Callable[[str], Any] | None = None
    action: str | None = None  # "append" for a repeatable flag
    metavar: str | None = None
    help: str | None = None  # default: the field's description
    to_value: Callable[[Any], Any] | None = None  # the parsed value -> the config value


@dataclass(frozen=True, eq=False)
class Command:
    """One subcommand: its schema, its runner and how its fields are spelled as flags."""

    path: tuple[str, ...]  # ("eval", "gen")
    help: str
    example: str  # one command line, shown at the end of the help
    schema: str | Callable[[], type]  # "module:Class", imported when the command is used
    runner: str  # "module:function", called with the config; returns the exit status
    flags: tuple[str, ...] | None = None  # None: every field a flag can hold
    exclude: tuple[str, ...] = ()
    nested: tuple[str, ...] = ()  # sub-configs whose fields are flags too ("decoding")
    spellings: tuple[Flag, ...] = ()
    positional: tuple[str, ...] = ()  # fields given as positional arguments
    config: Literal["flag", "positional", "none"] = "flag"  # --config FILE, CONFIG.yaml, none
    config_metavar: str = "CONFIG.yaml"
    config_help: str = "YAML file; flags given here override it"
    section: bool = False  # --section: read one section of the YAML file
    fixed: tuple[tuple[str, Any], ...] = ()  # values the command itself sets (train pt: stage)
    builder: str | None = None  # "module:function"(config_file, overrides); default build_config
    returns_status: bool = True  # False: the runner returns something else; exit 0
    choices: tuple[tuple[str, str | Callable[[], Iterable[str]]], ...] = ()  # over Table's


def resolve(ref: str | Callable[[], Any]) -> Any:
    """The object a "module:attr" reference names (or what a callable returns)."""
    if callable(ref):
        return ref()
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class FlagSpec:
    """One argparse argument, made from a field (and a `Flag` where the rule does not fit)."""

    key: str
    names: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    to_value: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        return self.key


def _non_none(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _literal_values(options: list[Any]) -> list[Any] | None:
    values = []
    for option in options:
        if typing.get_origin(option) is not Literal:
            return None
        values.extend(typing.get_args(option))
    return values


def _int_or_word(words: Sequence[str]) -> Callable[[str], int | str]:
    def parse(text: str) -> int | str:
        if text in words:
            return text
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {' or '.join(words)} or an integer"
            ) from None

    parse.__name__ = "int"
    return parse


def argparse_kwargs(annotation: Any) -> dict[str, Any] | None:
    """How a field of this type is given on the command line; None when only --set can hold it."""
    options = _non_none(annotation)
    if options == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    literals = _literal_values(options)
    if literals is not None:
        return {"choices": literals, "type": type(literals[0])}
    if len(options) == 2 and int in options:  # int | Literal["auto"]
        words = _literal_values([o for o in options if o is not int])
        if words and all(isinstance(w, str) for w in words):
            return {"type": _int_or_word(words), "metavar": "{" + ",".join([*words, "N"]) + "}"}
    if len(options) == 1 and options[0] in _SCALARS:
        return {"type": options[0]}
    if len(options) == 1 and typing.get_origin(options[0]) is list:
        items = _non_none(typing.get_args(options[0])[0])
        scalar = next((t for t in items if t in _SCALARS), None)
        if scalar is not None:  # list[str | DataFile]: the files are given by path
            return {"nargs": "+", "type": scalar}
    return None


def field_at(schema: type, key: str) -> Any:
    """The pydantic FieldInfo of a dotted key (`decoding.top_p`), through nested configs."""
    parts = key.split(".")
    current = schema
    for part in parts[:-1]:
        annotation = current.model_fields[part].annotation
        current = next(a for a in _non_none(annotation) if hasattr(a, "model_fields"))
    return current.model_fields[parts[-1]]


def _default_text(schema: type, key: str) -> str:
    """' (default: X)', read from the schema; a nested key from its parent's default value."""
    parent, _, leaf = key.rpartition(".")
    info = field_at(schema, key)
    if parent:
        default = getattr(field_at(schema, parent).get_default(call_default_factory=True), leaf)
    elif info.is_required():
        return ""
    else:
        default = info.get_default(call_default_factory=True)
    if default is None or default == [] or default == {} or hasattr(default, "model_fields"):
        return ""
    if isinstance(default, bool):
        default = "on" if default else "off"
    return f" (default: {default})"


def _field_keys(cmd: Command, schema: type) -> list[str]:
    if cmd.flags is not None:
        keys = list(cmd.flags)
    else:
        keys = [name for name in schema.model_fields if name not in cmd.exclude]
    for parent in cmd.nested:
        sub = field_at(schema, parent).get_default(call_default_factory=True)
        keys.extend(f"{parent}.{name}" for name in type(sub).model_fields)
    return [key for key in keys if key not in cmd.nested and key not in dict(cmd.fixed)]


def flag_specs(cmd: Command, schema: type, choices: dict[str, Iterable[str]]) -> list[FlagSpec]:
    """Every argument of `cmd`, in schema order; `choices` are registry names shown per field."""
    spelled = {flag.key: flag for flag in cmd.spellings}
    specs = []
    for key in _field_keys(cmd, schema):
        info = field_at(schema, key)
        flag = spelled.get(key, Flag(key))
        kwargs = argparse_kwargs(info.annotation) or {}
        if flag.type is not None or flag.action is not None:
            kwargs = {"type": flag.type or str, "action": flag.action or "store"}
        elif not kwargs:
            if cmd.flags is not None or key in cmd.positional:
                raise TypeError(f"{schema.__name__}.{key}: no command-line spelling; add a Flag")
            continue  # a mapping or a list of configs: --config or --set holds it
        leaf = key.rpartition(".")[2]
        if leaf in choices and "choices" not in kwargs:
            kwargs["metavar"] = "{" + ",".join(choices[leaf]) + "}"
        if flag.metavar:
            kwargs["metavar"] = flag.metavar
        elif "choices" not in kwargs and kwargs.get("action") is not argparse.BooleanOptionalAction:
            kwargs.setdefault("metavar", leaf.upper())  # TOP_P, not DECODING.TOP_P
        help_text = flag.help or info.description or ""
        kwargs["help"] = (help_text + _default_text(schema, key)).replace("%", "%%")
        if key in cmd.positional:
            kwargs["metavar"] = kwargs.get("metavar") or leaf.upper()
            names: tuple[str, ...] = (key,)
        else:
            kwargs["dest"] = key
            kwargs["default"] = None
            names = (flag.name or "--" + leaf.replace("_", "-"),)
        specs.append(FlagSpec(key, names, kwargs, flag.to_value))
    return sorted(specs, key=lambda spec: spec.key not in cmd.positional)


def overrides_from(args: argparse.Namespace, specs: Sequence[FlagSpec]) -> dict[str, Any]:
    """Config keys the user gave on the command line (a flag not given is None: skipped)."""
    overrides = {}
    for spec in specs:
        value = getattr(args, spec.dest, None)
        if value is not None:
            overrides[spec.key] = spec.to_value(value) if spec.to_value else value
    return overrides


class LazyParser(argparse.ArgumentParser):
    """An ArgumentParser whose arguments are added the first time it parses or prints help."""

    def __init__(
        self,
        *args: Any,
        populate: Callable[[LazyParser], None] | None = None,
        on_error: Callable[[BaseException, bool], Any] | None = None,
        **kw: Any,
    ):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)
        self._populate = populate
        self._on_error = on_error

    def populate(self) -> LazyParser:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        try:
            self.populate()
        except (Exception, KeyboardInterrupt) as exc:
            # Importing the stage failed (a broken install, a memory limit, Ctrl-C): the
            # caller reports it as it reports a failing command.
            if self._on_error is None:
                raise
            self._on_error(exc, "--debug" in (args or []))
            raise
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.populate()
        return super().format_help()

    def format_usage(self) -> str:
        self.populate()
        return super().format_usage()


def example_epilog(example: str) -> str:
    return f"example:\n  {example}"


@dataclass(frozen=True)
class Table:
    """Every subcommand, the groups they sit in (train, eval, ...) and the registry choices."""

    commands: tuple[Command, ...]
    groups: dict[tuple[str, ...], tuple[str, str]]  # path -> (help, example)
    choices: dict[str, str | Callable[[], Iterable[str]]]  # field name -> registry names
    before_import: Callable[[Command], None] = lambda cmd: None
    on_import_error: Callable[[BaseException, bool], Any] | None = None  # (error, --debug)

    def schema(self, cmd: Command) -> type:
        self.before_import(cmd)
        return resolve(cmd.schema)

    def specs(self, cmd: Command, schema: type) -> list[FlagSpec]:
        refs = {**self.choices, **dict(cmd.choices)}
        shown = {name: list(resolve(ref)) for name, ref in refs.items()}
        return flag_specs(cmd, schema, shown)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add every group and command below `parser` (a command's flags when first used)."""
        subparsers: dict[tuple[str, ...], Any] = {
            (): parser.add_subparsers(dest="command", required=True, parser_class=LazyParser)
        }
        for path, (help_text, example) in self.groups.items():
            group = subparsers[path[:-1]].add_parser(
                path[-1], help=help_text, description=help_text, epilog=example_epilog(example)
            )
            subparsers[path] = group.add_subparsers(dest=f"{path[-1]}_command", required=True)
        for cmd in self.commands:
            sub = subparsers[cmd.path[:-1]].add_parser(
                cmd.path[-1],
                help=cmd.help,
                description=cmd.help,
                epilog=example_epilog(cmd.example),
                populate=lambda p, cmd=cmd: self._populate(p, cmd),
                on_error=self.on_import_error,
            )
            sub.set_defaults(func=lambda args, cmd=cmd: self.run(cmd, args))

    def _populate(self, parser: argparse.ArgumentParser, cmd: Command) -> None:
        if cmd.config == "positional":
            parser.add_argument("config_file", metavar=cmd.config_metavar, help=cmd.config_help)
        for spec in self.specs(cmd, self.schema(cmd)):
            parser.add_argument(*spec.names, **spec.kwargs)
        if cmd.config == "flag":
            parser.add_argument("--config", metavar="FILE", help=cmd.config_help)
        if cmd.section:
            parser.add_argument(
                "--section", help="read the config from this section of the YAML file (e.g. merge)"
            )
        if cmd.config != "none":
            parser.add_argument(
                "--set",
                action="append",
                metavar="KEY=VALUE",
                help="override any config key, nested ones too (repeatable): --set lora.r=16",
            )
        parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")

    def config(self, cmd: Command, args: argparse.Namespace) -> Any:
        """The command's config: its YAML file, then the flags, then the fixed values, then --set."""
        from medmerge.config import build_config, parse_set_overrides

        schema = self.schema(cmd)
        overrides = {
            **overrides_from(args, self.specs(cmd, schema)),
            **dict(cmd.fixed),
            **parse_set_overrides(getattr(args, "set", None)),
        }
        config_file = getattr(args, "config_file", None) or getattr(args, "config", None)
        if cmd.builder is not None:
            return resolve(cmd.builder)(config_file, overrides)
        return build_config(schema, config_file, overrides, section=getattr(args, "section", None))

    def run(self, cmd: Command, args: argparse.Namespace) -> int:
        status = resolve(cmd.runner)(self.config(cmd, args))
        return int(status or 0) if cmd.returns_status else 0
