"""Typed, validated parameters: one dataclass per params.yaml section.

    cfg = load_section("prepare", PrepareConfig)          # reads params.yaml
    cfg = from_dict(PrepareConfig, raw, prefix="prepare")  # from a dict (tests, overrides)

Every key is checked before any work starts: an unknown key, a wrong type or an out-of-range value
stops with one `ConfigError` that names the full key (`prepare.filters.max_tokens: expected int, got
str 'a lot'`). Range checks live in each dataclass's `validate(prefix)` method.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from mathpipe.errors import ConfigError

T = TypeVar("T")
PARAMS_FILE = Path("params.yaml")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # what a dtype key may name besides auto (models.DTYPES)


class ParamsLoader(yaml.SafeLoader):
    """YAML as DVC writes it: `5e-05` is a float (YAML 1.2), where PyYAML's YAML 1.1 rules read a
    string. `dvc exp run -S lr=5e-5` writes exactly that."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str):
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file of parameter sections (params.yaml, a profile), with one clear error if it is not."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    return read_yaml_mapping(path)


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE, optional: bool = False) -> T:
    """`params[section]` as `cls`; an optional section that is absent takes cls's defaults."""
    params = load_params(path)
    if section not in params and not optional:
        raise ConfigError(f"{path}: missing section '{section}'")
    if section not in params:
        return from_dict(cls, {}, prefix=section)
    return from_dict(cls, params[section], prefix=section)


def from_dict(cls: type[T], raw: Any, prefix: str) -> T:
    """Build dataclass `cls` from `raw`, checking keys and types recursively, then its ranges."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys need not be strings (`1: x`)
    if unknown:
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown parameter (known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}"
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required parameter is missing")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix)
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(e)
        # An error about a nested key (`key.sub` or `key[3]`) means the value had the right shape
        # and one field of it is wrong: that message says more than "expected X or Y".
        nested = [e for e in errors if str(e).startswith((f"{key}.", f"{key}["))]
        if nested:
            raise nested[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{key}: must be one of {choices}, got {_describe(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _coerce(inner, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
        try:
            return float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{key}: number out of range, got {_describe(value)}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"{key}: unsupported parameter type {tp!r}")  # a bug in a config class


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)) for a in args]
    optional = " or null" if type(None) in typing.get_args(tp) else ""
    return " or ".join(names) + optional


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# Range checks shared by the config classes: each raises ConfigError naming the key.


def check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def check_positive(value: float, key: str) -> None:
    check(value > 0, key, f"must be > 0, got {value}")


def check_range(value: float, key: str, low: float, high: float) -> None:
    check(low <= value <= high, key, f"must be between {low} and {high}, got {value}")
