"""Typed, validated parameters: one dataclass per params.yaml section.

    cfg = load_section("prepare", PrepareConfig)          # reads params.yaml
    cfg = from_dict(PrepareConfig, raw, prefix="prepare")  # from a dict
    gen = from_params(GenerationSettings, "evaluate.generation", n=4, temperature=0.6)  # params.yaml + overrides

params.yaml holds every default the pipeline runs with: a config class has no default for a key that
params.yaml sets, so a library call or a test that needs one takes it from params.yaml (from_params).

Every key is checked before any work starts: an unknown key, a wrong type or an out-of-range value
stops with one `ConfigError` that names the full key (`prepare.filters.max_tokens: expected int, got
str 'a lot'`). Range checks live in each dataclass's `validate(prefix)` method.
"""

from __future__ import annotations

import copy
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


def load_section(section: str, cls: type[T], path: str | Path = PARAMS_FILE) -> T:
    """`params[section]` as `cls`: every key cls declares without a default must be there."""
    params = load_params(path)
    if section not in params:
        raise ConfigError(f"{path}: missing section '{section}'")
    return from_dict(cls, params[section], prefix=section)


def params_value(key: str, params_file: str | Path = PARAMS_FILE) -> Any:
    """A copy of the value at a dotted key of params.yaml (`evaluate.generation`)."""
    value: Any = load_params(params_file)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"{params_file}: no key '{key}'")
        value = value[part]
    return copy.deepcopy(value)


def from_params(cls: type[T], key: str, params_file: str | Path = PARAMS_FILE, **overrides: Any) -> T:
    """`cls` from params.yaml's `key` with `overrides` laid over it: the pipeline's defaults for a
    library call, a tool or a test. A mapping given for a nested section (`generation={"n": 4}`)
    changes only the keys it names; any other value, a dataclass among them, replaces the key's."""
    return from_dict(cls, overlay(cls, params_value(key, params_file), overrides), key)


def overlay(cls: type, raw: dict, overrides: dict) -> dict:
    hints = typing.get_type_hints(cls)
    merged = dict(raw)
    for name, value in overrides.items():
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        inner = nested_dataclass(hints.get(name))
        if inner is not None and isinstance(value, dict) and isinstance(merged.get(name), dict):
            value = overlay(inner, merged[name], value)
        merged[name] = value
    return merged


def nested_dataclass(tp: Any) -> type | None:
    """The dataclass of a nested section's type (`X` or `X | None`), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


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
