"""Profiles: a named set of parameter overrides (profiles/<name>.yaml) run as a DVC experiment.

    overrides = params_overrides(load_profile("qwen3-0.6b"))
    merge(params, overrides)                # params with the profile applied; a typo is a ConfigError
    set_arguments(params, overrides)        # the `dvc exp run -S` arguments that apply it

(mathpipe.tools.run_profile starts the experiment; mathpipe.tools.dry_run checks a profile offline.)

A profile mirrors params.yaml: the same sections and keys, only those that change. `extends: <name>`
builds on another profile (profiles/<name>.yaml beside it): its keys first, then this one's, mapping
into mapping, so a profile states only how it differs from the one it extends. It is applied
with `dvc exp run -S`, so params.yaml stays the default and `dvc exp show` lists the profile's run
beside the others. Every key is validated (mathpipe.tools.dry_run) before DVC starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from mathpipe.config import read_yaml_mapping
from mathpipe.errors import ConfigError

PROFILES_DIR = Path("profiles")
PROFILE_ONLY_KEYS = ("dry_run", "stages")  # what a profile may hold that is not params (stages: dvc targets)
# Sections in a library config's own argument names (TRL's for train:, PEFT's LoraConfig for lora:): a
# profile may add any of them (the dry run checks each against its dataclass,
# mathpipe.training.trl_args), not only those params.yaml happens to set.
TRAINERS = ("sft", "rft", "reward_model", "dpo", "grpo")
LIBRARY_ARGUMENT_SECTIONS = tuple(f"{stage}.{section}" for stage in TRAINERS for section in ("train", "lora"))


def profile_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"profile not found: {path} (profiles: {known})")
    return path


def load_profile(name: str, _extending: tuple[Path, ...] = ()) -> dict:
    """The profile's sections, with those of the profile it extends (and so on) beneath them."""
    path = profile_path(name)
    profile = read_yaml_mapping(path)
    base = profile.pop("extends", None)
    if base is None:
        return profile
    if not isinstance(base, str):
        raise ConfigError(f"{path}: extends: expected a profile name, got {base!r}")
    base_path = profile_path(str(path.parent / f"{base}.yaml") if not base.endswith((".yaml", ".yml")) else base)
    if base_path.resolve() in (*_extending, path.resolve()):
        chain = " -> ".join(str(p) for p in (*_extending, path.resolve(), base_path.resolve()))
        raise ConfigError(f"{path}: extends: a cycle of profiles ({chain})")
    return overlay(load_profile(str(base_path), (*_extending, path.resolve())), profile)


def overlay(base: dict, profile: dict) -> dict:
    """`profile` over `base`, mapping into mapping; any other value replaces."""
    merged = dict(base)
    for key, value in profile.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = overlay(merged[key], value)
        merged[key] = value
    return merged


def merge(base: dict, overrides: dict, prefix: str = "") -> dict:
    """params with the overrides applied; a key the params do not have is an error (a typo), except
    in a TRL or PEFT argument section."""
    merged = dict(base)
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if key not in base:
            if prefix.rstrip(".") not in LIBRARY_ARGUMENT_SECTIONS:
                raise ConfigError(f"{name}: not a parameter in params.yaml (a typo?)")
            merged[key] = value
        elif isinstance(value, dict) and isinstance(base[key], dict):
            merged[key] = merge(base[key], value, f"{name}.")
        else:
            merged[key] = value
    return merged


def hydra_value(value, key: str) -> str:
    """A value in the Hydra override grammar that `dvc exp run -S` parses: JSON-like, with bare
    mapping keys."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        mantissa, _, exponent = repr(value).partition("e")
        if exponent and "." not in mantissa:  # Hydra reads 5e-05 as a string, 5.0e-05 as a float
            mantissa += ".0"
        return f"{mantissa}e{exponent}" if exponent else mantissa
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, dict):
        for k in value:
            if not (isinstance(k, str) and k.replace("_", "a").isalnum()):
                raise ConfigError(f"{key}.{k}: a mapping key must be letters, digits or '_' to pass through dvc -S")
        return "{" + ",".join(f"{k}:{hydra_value(v, f'{key}.{k}')}" for k, v in value.items()) + "}"
    raise ConfigError(f"{key}: cannot pass a {type(value).__name__} through dvc exp run -S")


def set_arguments(base: dict, overrides: dict, prefix: str = "") -> list[str]:
    """`key=value` for dvc exp run -S: leaves where params has a mapping, whole values elsewhere
    (a null `hub` becomes a mapping in one go); `+key=value` adds a key params.yaml lacks (Hydra's
    grammar: DVC refuses a plain `key=value` for a new key)."""
    args = []
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            args += set_arguments(base[key], value, f"{name}.")
        else:
            args.append(f"{'' if key in base else '+'}{name}={hydra_value(value, name)}")
    return args


def params_overrides(profile: dict) -> dict:
    return {k: v for k, v in profile.items() if k not in PROFILE_ONLY_KEYS}
