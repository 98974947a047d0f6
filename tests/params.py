"""Configurations for tests, built from the checkout's params.yaml plus overrides: a test runs with
the pipeline's own defaults and cannot drift from them (there is no second copy in the code)."""

from __future__ import annotations

import copy
import functools
from typing import Any, TypeVar

from mathpipe import config
from mathpipe.config import load_params
from mathpipe.errors import ConfigError
from mathpipe.tools.profile import overlay
from tests.checkout import ROOT

T = TypeVar("T")
PARAMS_FILE = ROOT / "params.yaml"


@functools.cache
def checkout_params() -> dict:
    """The checkout's params.yaml, read once per test session (property tests build hundreds of configs)."""
    return load_params(PARAMS_FILE)


def param_config(cls: type[T], key: str, **overrides: Any) -> T:
    """`cls` from params.yaml's dotted `key`, the fields in `overrides` replaced (as config.from_params)."""
    return config.from_dict(cls, config.overlay(cls, params_section(key), overrides), key)


def params_section(key: str) -> Any:
    """A copy of params.yaml's value at the dotted `key`."""
    value: Any = checkout_params()
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ConfigError(f"{PARAMS_FILE}: no key '{key}'")
        value = value[part]
    return copy.deepcopy(value)


def params_with(overrides: dict) -> dict:
    """The checkout's whole params.yaml with `overrides` laid over it, mapping into mapping: the
    params of a project folder that a test runs a stage in."""
    return overlay(copy.deepcopy(checkout_params()), overrides)
