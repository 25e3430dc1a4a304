"""Typed, closed configs: YAML file + CLI overrides, every problem reported at once.

Each stage owns its schema (a `StageConfig` subclass in the stage's package); this module
holds what they share: loading, override merging, path resolution and error wording.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medmerge.errors import ConfigError, did_you_mean

C = TypeVar("C", bound="StageConfig")


class StageConfig(BaseModel):
    """Base of every schema: unknown keys are errors; values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    # Field names holding filesystem paths; they resolve relative to the config file.
    path_fields: ClassVar[tuple[str, ...]] = ()


MAX_YAML_VALUES = 100_000  # values a config may hold once its aliases are expanded


class _AliasError(yaml.MarkedYAMLError):
    """A recursive alias, or aliases that expand past MAX_YAML_VALUES (a 'billion laughs')."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that checks the composed document before building Python objects from it.

    PyYAML builds an alias as a shared reference, so a recursive alias becomes a list that
    contains itself and nine nested aliases of nine a billion values; both make validation
    (and any later walk of the config) run until killed.
    """

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` stands for with every alias written out; refuses cycles."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _AliasError(
            None,
            None,
            "alias is recursive (it names a value that contains it); write the value out",
            node.start_mark,
        )
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    total = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    if total > MAX_YAML_VALUES:
        raise _AliasError(
            None,
            None,
            f"aliases expand to more than {MAX_YAML_VALUES:,} values (a 'billion laughs' "
            "document); write the config without nested aliases",
            node.start_mark,
        )
    open_nodes.discard(key)
    sizes[key] = total
    return total


def load_yaml_text(text: str) -> Any:
    """yaml.safe_load with aliases bounded (see _BoundedLoader)."""
    return yaml.load(text, Loader=_BoundedLoader)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or bad YAML is one ConfigError line."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: config file not found")
    try:
        with open(file, encoding="utf-8") as handle:
            data = load_yaml_text(handle.read())
    except _AliasError as exc:
        raise ConfigError(f"{file}:{exc.problem_mark.line + 1}: YAML {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{file}: YAML nested too deeply to read; flatten the config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: config is not UTF-8 text; re-save it as UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{file}: config must be a mapping of keys to values, got {type(data).__name__}"
        )
    return data


def _resolve_paths(values: Any, base_dir: Path) -> Any:
    """Make relative path strings absolute against `base_dir` (lists of paths too)."""
    if isinstance(values, str):
        return values if os.path.isabs(values) else str((base_dir / values).resolve())
    if isinstance(values, list):
        return [_resolve_paths(v, base_dir) for v in values]
    if isinstance(values, dict) and "path" in values:
        return {**values, "path": _resolve_paths(values["path"], base_dir)}
    return values


def _describe(error: dict[str, Any], schema: type[StageConfig], source: str) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        key = str(error["loc"][-1])
        parent = _schema_at(schema, error["loc"][:-1])
        hint = did_you_mean(key, parent.model_fields) if parent else ""
        return f"{source}: unknown key {loc!r}{hint}"
    if error["type"] == "missing":
        return f"{source}: missing required key {loc!r}"
    if not loc:  # a check across several keys (a model validator)
        return f"{source}: {error['msg'].removeprefix('Value error, ')}"
    return f"{source}: {loc}: {error['msg']} (got {error.get('input')!r})"


def _schema_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model class at a validation-error location, for did-you-mean hints."""
    current: Any = schema
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return current


def build_config(
    schema: type[C],
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    section: str | None = None,
) -> C:
    """Load `schema` from an optional YAML file (or one `section` of it) plus CLI overrides.

    Overrides whose value is None are ignored (a flag the user did not give). Paths in the
    file resolve relative to the file; paths given on the command line relative to the cwd.
    """
    values: dict[str, Any] = {}
    source = "command line"
    if config_file is not None:
        source = str(config_file)
        values = read_yaml(config_file)
        if section is not None:
            if section not in values:
                raise ConfigError(
                    f"{config_file}: no {section!r} section{did_you_mean(section, values)}"
                )
            values = values[section] or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{config_file}: section {section!r} must be a mapping")
        base_dir = Path(config_file).resolve().parent
        for name in schema.path_fields:
            if name in values:
                values[name] = _resolve_paths(values[name], base_dir)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        _set_dotted(values, key, value)
    try:
        return schema(**values)
    except ValidationError as exc:
        problems = [_describe(e, schema, source) for e in exc.errors()]
        raise ConfigError("; ".join(problems)) from None


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating the intermediate mappings."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse `--set key=value` pairs; values are read as YAML scalars (1e-4, true, [a, b])."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lora.r=16")
        try:
            overrides[key.strip()] = load_yaml_text(raw)
        except (yaml.YAMLError, RecursionError):
            overrides[key.strip()] = raw
    return overrides
