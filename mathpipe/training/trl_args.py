"""A trainer's `train:` section in TRL's own argument names, checked against TRL's config dataclass
(and its `lora:` section against PEFT's LoraConfig, the same way).

    check_arguments(GRPOConfig, params["grpo"]["train"], "grpo.train", owned=OWNED_KEYS)   # names only
    args = trl_config(GRPOConfig, params["grpo"]["train"], "grpo.train",
                      owned={"output_dir": "checkpoints/grpo", "report_to": []})

A key a TRL user knows (`per_device_train_batch_size`, `learning_rate`, `num_generations`, `beta`,
...) works verbatim; an unknown key is one ConfigError naming it, with the closest known names; a key
the pipeline sets itself (where checkpoints go, logging, the device) is refused rather than silently
overridden. TRL's own checks (`__post_init__`) run before any model is loaded, and their message is
given under the section's name.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any

from mathpipe.errors import ConfigError

LIBRARIES = {"trl": "TRL", "peft": "PEFT", "transformers": "transformers"}


def library_name(config_class) -> str:
    root = config_class.__module__.split(".")[0]
    return LIBRARIES.get(root, root)


def known_arguments(config_class) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class) if f.init}


def check_arguments(config_class, raw: dict[str, Any], prefix: str, owned: Iterable[str]) -> None:
    """Every key is an argument of config_class and none is one the pipeline sets itself."""
    known, owned = known_arguments(config_class), set(owned)
    for key in raw:
        if not isinstance(key, str) or key not in known:
            close = list(dict.fromkeys([*sorted(n for n in known if str(key) in n)[:3],
                                        *difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.6)]))
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{prefix}.{key}: not an argument of {library_name(config_class)}'s "
                              f"{config_class.__name__}{hint}")
        if key in owned:
            raise ConfigError(f"{prefix}.{key}: set by the pipeline; remove it from params.yaml")


def trl_config(config_class, raw: dict[str, Any] | None, prefix: str, owned: dict[str, Any],
               defaults: dict[str, Any] | None = None):
    """config_class(**defaults, **raw, **owned), with one clear error for a bad key or value."""
    raw = dict(raw or {})
    check_arguments(config_class, raw, prefix, owned)
    try:
        return config_class(**{**(defaults or {}), **raw, **owned})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix}: {config_class.__name__} rejects these settings: {e}") from None
