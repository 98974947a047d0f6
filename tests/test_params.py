"""params.yaml holds every default the pipeline runs with, once: no dataclass field carries a second
value for a key that params.yaml sets, so an edit there is never shadowed by a default in the code."""

from __future__ import annotations

import copy
import dataclasses
import typing

import pytest

from mathpipe.config import from_dict, load_params, nested_dataclass
from mathpipe.errors import ConfigError
from mathpipe.tools.dry_run import section_classes
from tests.checkout import ROOT

PARAMS = load_params(ROOT / "params.yaml")
SECTION_CLASSES = section_classes()


def entry_dataclass_of(tp):
    """The dataclass of a mapping's entries (`dict[str, X]`), or None."""
    args = typing.get_args(tp)
    return args[1] if typing.get_origin(tp) is dict and dataclasses.is_dataclass(args[1]) else None


def keys_set(cls, raw: dict, prefix: tuple = ()) -> list[tuple[tuple, bool]]:
    """(key path, has a default) for every key of raw that is a field of cls, nested dataclasses included."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    found = []
    for name, value in raw.items():
        field = fields[name]
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        found.append(((*prefix, name), has_default))
        inner = nested_dataclass(hints[name])
        if inner is not None and isinstance(value, dict):
            found += keys_set(inner, value, (*prefix, name))
        if (entry := entry_dataclass_of(hints[name])) is not None:
            for key, item in value.items():
                found += keys_set(entry, item, (*prefix, name, key))
    return found


CASES = [(section, path) for section, cls in SECTION_CLASSES.items()
         for path, _ in keys_set(cls, PARAMS[section])]


def test_every_section_has_a_class():
    assert set(SECTION_CLASSES) == set(PARAMS) - {"dry_run"}


def test_no_field_that_params_yaml_sets_has_a_default():
    shadowed = [f"{section}.{'.'.join(path)}" for section, cls in SECTION_CLASSES.items()
                for path, has_default in keys_set(cls, PARAMS[section]) if has_default]
    assert shadowed == []


@pytest.mark.parametrize(("section", "path"), CASES, ids=[f"{s}.{'.'.join(p)}" for s, p in CASES])
def test_a_key_missing_from_params_is_an_error_naming_it(section, path):
    raw = copy.deepcopy(PARAMS[section])
    parent = raw
    for name in path[:-1]:
        parent = parent[name]
    del parent[path[-1]]
    with pytest.raises(ConfigError, match=rf"^{section}\.{'.'.join(path)}: required parameter is missing"):
        from_dict(SECTION_CLASSES[section], raw, section)


def test_params_yaml_uses_no_yaml_anchors():
    """DVC's `-S` (dvc.utils.hydra.apply_overrides, DVC 3.67.1) silently drops a change to an
    anchored mapping (`sft.lora: &lora {...}`, `-S sft.lora.r=32` leaves r as it was) and rewrites
    merge keys: each profile and section states its values in full instead."""
    import yaml

    events = yaml.parse((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert not [e for e in events if getattr(e, "anchor", None)]
