"""Configurations for tests, built from the checkout's params.yaml plus overrides: a test runs with
the pipeline's own defaults and cannot drift from them (there is no second copy in the code)."""

from __future__ import annotations

from typing import Any, TypeVar

from mathpipe.config import from_params, load_params, params_value
from mathpipe.tools.profile import overlay
from tests.checkout import ROOT

T = TypeVar("T")
PARAMS_FILE = ROOT / "params.yaml"


def param_config(cls: type[T], key: str, **overrides: Any) -> T:
    """`cls` from params.yaml's dotted `key`, the fields in `overrides` replaced."""
    return from_params(cls, key, PARAMS_FILE, **overrides)


def params_section(key: str) -> Any:
    """A copy of params.yaml's value at the dotted `key`."""
    return params_value(key, PARAMS_FILE)


def params_with(overrides: dict) -> dict:
    """The checkout's whole params.yaml with `overrides` laid over it, mapping into mapping: the
    params of a project folder that a test runs a stage in."""
    return overlay(load_params(PARAMS_FILE), overrides)
