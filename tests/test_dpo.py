"""DPO (mathpipe.training.dpo): parameters by key, training an adapter, the pair sources and splits.

Each run is a handful of optimiser steps on a few records, so what is checked is the plumbing a real
run depends on (masks, checkpoints, merged weights, metrics, errors), not how well a 2-step model does.
"""

from __future__ import annotations

import json

import pytest

from mathpipe.errors import ConfigError, DataError
from tests.params import param_config, params_section
from tests.trainers import LORA, PAIR_TRAIN


@pytest.mark.parametrize(("override", "key"), [
    ({"beta": 0}, r"dpo\.train\.beta"), ({"beta": -0.1}, r"dpo\.train\.beta"),
    ({"loss_type": ["sigmoid", "nope"]}, r"dpo\.train\.loss_type\[1\]: unknown DPO loss 'nope'"),
    ({"loss_weights": [1.0, 2.0]}, r"dpo\.train\.loss_weights: needs one weight per loss_type entry \(1\)"),
    ({"train_sampling_strategy": "group_by_length"}, r"dpo\.train\.train_sampling_strategy: cannot be group_by_length"),
])
def test_bad_dpo_parameters_name_their_key(override, key):
    from mathpipe.training.dpo import DPOStageConfig

    with pytest.raises(ConfigError, match=key):
        param_config(DPOStageConfig, "dpo", **{"train": override})


def test_dpo_trains_an_adapter_on_the_policy(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.dpo import DPOStageConfig, run_dpo

    cfg = param_config(DPOStageConfig, "dpo", **{
        "model": str(tiny_model_dir),
        "pairs": {**params_section("dpo.pairs"), "train_files": str(prepared / "pairs_train.jsonl"),
                  "val_files": str(prepared / "pairs_val.jsonl")},
        "max_train_samples": 16, "max_val_samples": 3, "out_dir": str(tmp_path / "dpo"),
        "checkpoint_dir": str(tmp_path / "ckpt"), "live_dir": str(tmp_path / "live"),
        "lora": LORA, "train": {**PAIR_TRAIN, "beta": 0.2, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
    })
    summary = run_dpo(cfg)
    assert (tmp_path / "dpo" / "adapter_config.json").is_file()
    assert summary["train_pairs"] == 16 and summary["val_pairs"] == 3 and summary["steps"] == 4
    assert 0.0 <= summary["held_out"]["reward_accuracy"] <= 1.0
    assert summary["held_out"]["reward_margin"] is not None


def test_dpo_holds_out_a_share_when_there_is_no_validation_file(tmp_path, prepared):
    from mathpipe.training.dpo import PairSource, load_pair_splits

    src = param_config(PairSource, "dpo.pairs", **{"train_files": str(prepared / "pairs_train.jsonl"), "val_files": None,
                                 "val_fraction": 0.2})
    train, val = load_pair_splits(src, "dpo.pairs", None, None)
    assert val and train
    prompts_of = lambda rows: {json.dumps(r["prompt"]) for r in rows}  # noqa: E731
    assert not prompts_of(train) & prompts_of(val)


def test_missing_pair_files_are_named(tmp_path):
    from mathpipe.training.dpo import PairSource, load_pair_splits

    src = param_config(PairSource, "dpo.pairs", **{"train_files": str(tmp_path / "none*.jsonl")})
    with pytest.raises(DataError, match=r"dpo\.pairs\.train_files"):
        load_pair_splits(src, "dpo.pairs", None, None)
