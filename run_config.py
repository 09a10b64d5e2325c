# Copyright 2026 The maral-xner authors. Licensed under the Apache License, Version 2.0.
"""A run's `.json` / `.yaml` config file: read (errors name the file and line) and typed against the argument
dataclasses (errors name the key and the file), the one reader of such files (`run_xner.py`, the model cards).

`HfArgumentParser.parse_dict` passes values to the dataclasses as they are, so a JSON `"false"` would be a true
string and YAML's `5e-5` (a string to PyYAML) a string learning rate. `typed_config` converts each value to its
field's type or refuses it:

    >>> typed_config({"learning_rate": "5e-5", "do_train": "false"}, [TrainingArguments], "run.yaml")
    {'learning_rate': 5e-05, 'do_train': False}
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class ConfigFileError(ValueError):
    """A config file that cannot be read or has a value of the wrong type; the message names the file."""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a `.json`, `.yaml` or `.yml` file (a mapping at the top level).

    Raises:
        ConfigFileError: naming the file (and the line) when it is missing, malformed or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{path}: cannot read the config file ({error}).") from error
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            settings = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigFileError(f"{path}{where}: malformed YAML: {getattr(error, 'problem', error)}") from error
    else:
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as error:
            where = f"(line {error.lineno}, column {error.colno})"
            raise ConfigFileError(f"{path} {where}: malformed JSON: {error.msg}") from error
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise ConfigFileError(f"{path}: the top level must be a mapping of flag names to values, not a list or value.")
    return settings


def field_types(dataclass_types: Iterable[type]) -> dict[str, Any]:
    """`{field name: resolved type}` of the `init` fields of the dataclasses (later ones win on shared names)."""
    resolved: dict[str, Any] = {}
    for dataclass_type in dataclass_types:
        hints = typing.get_type_hints(dataclass_type)
        for declared in dataclasses.fields(dataclass_type):
            if declared.init:
                resolved[declared.name] = hints.get(declared.name, declared.type)
    return resolved


def typed_config(config: dict[str, Any], dataclass_types: Iterable[type], path: str | Path) -> dict[str, Any]:
    """`config` with every value converted to the type of its field.

    Raises:
        ConfigFileError: naming the key and the file for an unknown key or a value of another type.
    """
    types_by_name = field_types(dataclass_types)
    unknown = sorted(str(key) for key in config if key not in types_by_name)
    if unknown:
        raise ConfigFileError(f"{path}: unknown key(s) {', '.join(unknown)} (not a flag of run_xner.py).")
    typed = {}
    for key, value in config.items():
        try:
            typed[key] = convert(value, types_by_name[key])
        except (TypeError, ValueError) as error:
            raise ConfigFileError(f"{path}: key {key!r}: {error}") from None
    return typed


def convert(value: Any, annotation: Any) -> Any:
    """`value` as an instance of `annotation` (bool, int, float, str, an Enum, a list, a dict, an optional or a
    union of those); other annotations take the value as it is.

    Raises:
        ValueError: when the value has another type and is not a string of that type.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        if value is None and type(None) in members:
            return None
        choices = [member for member in members if isinstance(member, type) and issubclass(member, enum.Enum)]
        if choices and isinstance(value, str):  # `SaveStrategy | str`: the string must name a member
            return convert(value, choices[0])
        errors = []
        for member in sorted((m for m in members if m is not type(None)), key=_exact_match_first(value)):
            try:
                return convert(value, member)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(" / ".join(errors))
    if origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
        raise ValueError(f"expected one of {', '.join(map(repr, typing.get_args(annotation)))}, got {value!r}")
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        element = (typing.get_args(annotation) or (Any,))[0]
        return [convert(item, element) for item in value]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return value
    if annotation is bool:
        return _to_bool(value)
    if annotation is int:
        return _to_int(value)
    if annotation is float:
        return _to_float(value)
    if annotation is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ValueError(f"expected a string, got {value!r}")
        return value if isinstance(value, str) else str(value)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in annotation)
            raise ValueError(f"expected one of {choices}, got {value!r}") from None
    return value


def _exact_match_first(value: Any):
    """Sort key of union members: the member `value` already is an instance of comes first (so `str | list` keeps a
    list a list, `float | str` keeps a string that is not a number a string)."""

    def key(member: Any) -> int:
        base = typing.get_origin(member) or member
        return 0 if isinstance(base, type) and isinstance(value, base) and not isinstance(value, bool) else 1

    return key


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS + FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {value!r}")


__all__ = ["ConfigFileError", "convert", "read_config_file", "typed_config"]
