"""Small training configurations shared by the trainer tests: a few optimiser steps on a few records."""

from __future__ import annotations

from pathlib import Path

from tests.params import param_config, params_section

# TRL's own argument names (SFTConfig, RewardConfig, DPOConfig), as params.yaml writes them
TRAIN = {"num_train_epochs": 1, "max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
         "learning_rate": 1e-3, "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "max_length": 256, "seed": 0,
         "gradient_checkpointing": False}
PAIR_TRAIN = {**TRAIN, "max_length": 512}  # prepare keeps pairs within 512 tokens
LORA = {**params_section("sft.lora"), "r": 4, "lora_alpha": 8}



def sft_config(tmp: Path, model: Path, prepared: Path, **overrides):
    from mathpipe.training.sft import SFTStageConfig

    raw = {
        "model": str(model),
        "train_file": str(prepared / "sft_train.jsonl"),
        "val_file": str(prepared / "sft_val.jsonl"),
        "max_train_samples": 24,
        "max_val_samples": 4,
        "out_dir": str(tmp / "adapter"),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "live_dir": str(tmp / "dvclive"),
        "lora": LORA,
        "train": TRAIN,
        **overrides,
    }
    return param_config(SFTStageConfig, "sft", **raw)


def merge_config(prepared: Path, **overrides):
    from mathpipe.training.merge import MergeConfig

    raw = {"models": {"x": {"base": "b", "adapter": "a", "out": "o"}},
           "probe_file": str(prepared / "sft_val.jsonl"), "probe_samples": 4, **overrides}
    return param_config(MergeConfig, "merge", **raw)
