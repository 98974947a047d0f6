"""GRPO on the tiny fixture model: TRL's GRPOTrainer with the checker's rewards, its parameters, resume.

A few steps of 2 prompts x 2 completions of 16 tokens: what is checked is the plumbing (rewards reach
the trainer, the adapter and figures are written, an interruption resumes, bad keys are named), not
whether a 3-step policy improves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mathpipe.errors import ConfigError
from tests.params import param_config, params_section

TRAIN = {"max_steps": 3, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 16,
         "learning_rate": 1e-3, "save_steps": 2, "seed": 0}


def grpo_config(tmp: Path, model: Path, prepared: Path, train: dict | None = None, **overrides):
    from mathpipe.training.grpo import GRPOStageConfig

    raw = {
        "model": str(model),
        "prompts_file": str(prepared / "sft_train.jsonl"),
        "max_prompts": 8,
        "out_dir": str(tmp / "adapter"),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "live_dir": str(tmp / "dvclive"),
        "lora": {**params_section("sft.lora"), "r": 4, "lora_alpha": 8},   # grpo.lora is null (full FT)
        "rewards": {"weights": {"accuracy": 1.0, "format": 0.5}},
        "train": {**TRAIN, **(train or {})},
        **overrides,
    }
    return param_config(GRPOStageConfig, "grpo", **raw)


def test_grpo_trains_an_adapter_and_logs_its_rewards(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.grpo import run_grpo

    summary = run_grpo(grpo_config(tmp_path, tiny_model_dir, prepared))
    assert summary["steps"] == 3 and summary["num_generations"] == 2
    assert summary["rewards"] == {"accuracy": 1.0, "format": 0.5}
    assert 0 <= summary["uniform_group_fraction"] <= 1
    assert 0 < summary["completion_length_mean"] <= 16
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    logged = tmp_path / "dvclive" / "plots" / "metrics"  # the curves dvc plots draws, one row per step
    for curve in ("reward.tsv", "reward_std.tsv", "frac_reward_zero_std.tsv", "rewards/accuracy/mean.tsv",
                  "completions/mean_length.tsv"):
        assert len((logged / curve).read_text().splitlines()) == 1 + 3, curve
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_an_interrupted_grpo_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, prepared):
    from transformers import TrainerCallback

    from mathpipe.training.grpo import run_grpo

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # checkpoint-2 is on disk; step 3 is lost
                raise KeyboardInterrupt

    cfg = grpo_config(tmp_path, tiny_model_dir, prepared, train={"max_steps": 4})
    with pytest.raises(KeyboardInterrupt):
        run_grpo(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "adapter").exists()

    summary = run_grpo(cfg)
    assert summary["resumed_from"] == "checkpoint-2"
    assert summary["steps"] == 4
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(("train", "key"), [
    ({"num_generations": 1}, "grpo.train.num_generations"),
    ({"beta": -0.1}, "grpo.train.beta"),
    ({"num_generation": 4}, "grpo.train.num_generation"),      # a typo: named, with the close match
    ({"output_dir": "elsewhere"}, "grpo.train.output_dir"),    # the pipeline's own
    ({"max_completion_length": 100_000}, "grpo.train.max_completion_length"),
])
def test_bad_grpo_parameters_name_their_key(tmp_path, tiny_model_dir, prepared, train, key):
    from mathpipe.training.grpo import run_grpo

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        run_grpo(grpo_config(tmp_path, tiny_model_dir, prepared, train=train))
    if key.endswith("num_generation"):
        assert "num_generations" in str(error.value)
    assert not (tmp_path / "adapter").exists()


def test_an_unknown_reward_is_named(tmp_path, tiny_model_dir, prepared):
    with pytest.raises(ConfigError, match=r"grpo\.rewards\.weights\.brevity"):
        grpo_config(tmp_path, tiny_model_dir, prepared, rewards={"weights": {"brevity": 1.0}})
