"""The trainer skeleton (mathpipe.training.trainer) through the SFT stage: TRL arguments and LoRA
targets checked by key, pair lengths, resume from checkpoints, DVCLive.

Each run is a handful of optimiser steps on a few records, so what is checked is the plumbing a real
run depends on (masks, checkpoints, merged weights, metrics, errors), not how well a 2-step model does.
"""

from __future__ import annotations

import pytest

from mathpipe.errors import ConfigError, PipelineError
from tests.params import param_config, params_section
from tests.trainers import LORA, PAIR_TRAIN, TRAIN, sft_config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lora": {**LORA, "r": 0}}, r"sft\.lora\.r"),
        ({"lora": {**LORA, "lora_dropout": 1.5}}, r"sft\.lora\.lora_dropout"),
        # PEFT's own names, checked against its LoraConfig
        ({"lora": {**LORA, "alpha": 8}}, r"sft\.lora\.alpha: not an argument of PEFT's LoraConfig \(did you mean .*lora_alpha"),
        ({"lora": {**LORA, "task_type": "SEQ_CLS"}}, r"sft\.lora\.task_type: set by the pipeline"),
        # PEFT would choose the targets itself (q_proj, v_proj for Qwen3), silently
        ({"lora": {k: v for k, v in LORA.items() if k != "target_modules"}}, r"sft\.lora\.target_modules: missing"),
        ({"dtype": "int8"}, r"sft\.dtype"),
        ({"train": {**TRAIN, "learning_rate": -1e-4}}, r"sft\.train\.learning_rate"),
        ({"train": {**TRAIN, "per_device_train_batch_size": 0}}, r"sft\.train\.per_device_train_batch_size: must be"),
        ({"train": {**TRAIN, "lr_scheduler_type": "zigzag"}}, r"sft\.train\.lr_scheduler_type: unknown scheduler"),
        ({"train": {**TRAIN, "max_steps": 0}}, r"sft\.train\.max_steps"),
        # a name TRL does not know, with the one it probably meant
        ({"train": {**TRAIN, "batch_size": 4}},
         r"sft\.train\.batch_size: not an argument of TRL's SFTConfig \(did you mean .*per_device_train_batch_size"),
        # what the pipeline sets itself is refused, not silently overridden
        ({"train": {**TRAIN, "bf16": True}}, r"sft\.train\.bf16: set by the pipeline"),
        ({"train": {**TRAIN, "assistant_only_loss": False}}, r"sft\.train\.assistant_only_loss: set by the pipeline"),
    ],
)
def test_bad_training_parameters_name_their_key(tmp_path, tiny_model_dir, prepared, override, message):
    with pytest.raises(ConfigError, match=message):
        sft_config(tmp_path, tiny_model_dir, prepared, **override)


def test_any_argument_of_trls_config_works_verbatim(tmp_path, tiny_model_dir, prepared):
    """A key params.yaml does not list reaches TRL as written; what it leaves out is TRL's default."""
    cfg = sft_config(tmp_path, tiny_model_dir, prepared,
                     train={**TRAIN, "adam_beta2": 0.95, "neftune_noise_alpha": 5.0, "completion_only_loss": None})
    args = cfg.arguments("sft")
    assert (args.adam_beta2, args.neftune_noise_alpha, args.max_length) == (0.95, 5.0, 256)
    assert args.assistant_only_loss and args.output_dir == cfg.checkpoint_dir and args.report_to == []
    assert args.warmup_steps == 0  # TRL's default, not one of the pipeline's


@pytest.mark.parametrize(
    ("targets", "message"),
    [(["q_proj", "qkv_proj"], r"sft\.lora\.target_modules\[1\]: the model has no linear module named 'qkv_proj'"),
     (["lm_head"], r"sft\.lora\.target_modules\[0\]: 'lm_head' is an embedding or output head"),
     (["embed_tokens"], r"sft\.lora\.target_modules\[0\]: 'embed_tokens'")],
)
def test_lora_targets_are_checked_against_the_model(tmp_path, tiny_model_dir, prepared, targets, message):
    from mathpipe.training.sft import run_sft

    cfg = sft_config(tmp_path, tiny_model_dir, prepared, lora={**LORA, "target_modules": targets})
    with pytest.raises(ConfigError, match=message):
        run_sft(cfg)
    assert not (tmp_path / "adapter").exists()


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, prepared, sft_run):
    from transformers import TrainerCallback

    from mathpipe.training.sft import run_sft

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # checkpoint-2 is on disk; step 3 is lost
                raise KeyboardInterrupt

    cfg = sft_config(tmp_path, tiny_model_dir, prepared)
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "adapter").exists()

    summary = run_sft(cfg)
    assert summary["resumed_from"] == "checkpoint-2"
    assert summary["steps"] == 4
    # Throughput counts only the tokens of the steps this run trained (3 and 4), not 1 and 2 again.
    assert 0 < summary["train_tokens"] < sft_run[1]["train_tokens"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # A finished run leaves no checkpoint: a later re-run trains again instead of "resuming" at the end.
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_checkpoints_of_another_configuration_are_not_resumed(tmp_path):
    from mathpipe.training.trainer import prepare_checkpoints

    folder = tmp_path / "ckpt"
    assert prepare_checkpoints(folder, "aaaa") is None
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoints(folder, "aaaa").endswith("checkpoint-5")
    assert prepare_checkpoints(folder, "bbbb") is None  # another learning rate, other data...
    assert not (folder / "checkpoint-5").exists()


@pytest.mark.parametrize("stage", ["dpo", "reward_model"])
def test_a_max_length_that_no_pair_fits_stops_before_training(tmp_path, tiny_model_dir, prepared, stage):
    """Truncation would cut the answer's end and EOS, the tokens that tell chosen from rejected."""
    from mathpipe.training.dpo import DPOStageConfig, run_dpo
    from mathpipe.training.reward_model import RewardStageConfig, run_reward_model

    common = {"model": str(tiny_model_dir), "max_train_samples": 8, "max_val_samples": 2,
              "out_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "ckpt"),
              "live_dir": str(tmp_path / "live"), "lora": LORA, "train": {**PAIR_TRAIN, "max_length": 32}}
    files = {"train_file": str(prepared / "pairs_train.jsonl"), "val_file": str(prepared / "pairs_val.jsonl")}
    if stage == "dpo":
        cfg, run = param_config(DPOStageConfig, stage, **{**common, "pairs": {**params_section("dpo.pairs"), "train_files": files["train_file"],
                                                                   "val_files": files["val_file"]}}), run_dpo
    else:
        cfg, run = param_config(RewardStageConfig, stage, **{**common, **files}), run_reward_model
    with pytest.raises(ConfigError, match=rf"^{stage}\.train\.max_length: 32 tokens fit none of the 8 training pairs"
                                          r".*rejection_sampling\.generation\.max_new_tokens"):
        run(cfg)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def test_a_pair_too_long_for_max_length_is_left_out_and_counted_not_cut(tiny_model_dir, caplog):
    from mathpipe.models import load_tokenizer
    from mathpipe.training.trainer import pairs_that_fit

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")

    def pair(question, rejected):
        return {"prompt": [{"role": "user", "content": question}],
                "chosen": [{"role": "assistant", "content": "\\boxed{5}"}],
                "rejected": [{"role": "assistant", "content": rejected}]}

    rows = [pair("What is 2 + 3?", "6"), pair("What is 1 + 4?", "7 " * 300), pair("What is 5 + 0?", "4")]
    fitted = pairs_that_fit(tokenizer, rows, 128, "dpo.train.max_length")
    assert fitted.rows == [rows[0], rows[2]] and fitted.dropped == 1 and 0 < fitted.longest <= 128
    assert "dpo.train.max_length: 1 of 3 pairs are longer than 128 tokens" in caplog.text
    assert pairs_that_fit(tokenizer, [], 128, "dpo.train.max_length").rows == []  # no held-out pairs: none to fit


def test_a_bf16_adamw_step_at_a_reward_model_learning_rate_is_lost_unless_the_weight_is_float32():
    """Why trainable parameters are upcast: an update below half a bf16 ulp rounds to nothing."""
    import torch

    weight = torch.full((64,), 2.0 ** -5, dtype=torch.bfloat16)
    for trained in (torch.nn.Parameter(weight.clone()), torch.nn.Parameter(weight.float())):
        optimizer = torch.optim.AdamW([trained], lr=5e-5, weight_decay=0.0)
        trained.grad = torch.ones_like(trained)
        optimizer.step()
        assert (not torch.equal(trained.detach().float(), weight.float())) == (trained.dtype == torch.float32)


def test_a_bf16_models_trainable_parameters_train_in_float32_and_the_frozen_stay_bf16(tiny_model_dir):
    """The reward model's new score head is a PEFT modules_to_save, which PEFT does not upcast."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from mathpipe.training.trainer import trainable_dtype, trainable_in_float32

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["q_proj"]))
    assert "bfloat16" in trainable_dtype(model)  # the score head, as PEFT leaves it
    cast = trainable_in_float32(model)
    assert cast and all("score" in name for name in cast)
    assert trainable_dtype(model) == "float32"
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_dvclive_in_an_empty_git_repository_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    from mathpipe.training.trainer import dvclive_callback

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="commit once"):
        dvclive_callback(tmp_path / "live", resume=False)
