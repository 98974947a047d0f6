"""The Bradley-Terry reward model (mathpipe.training.reward_model): training, merge, scoring, and
its likelihood baseline.

Each run is a handful of optimiser steps on a few records, so what is checked is the plumbing a real
run depends on (masks, checkpoints, merged weights, metrics, errors), not how well a 2-step model does.
"""

from __future__ import annotations

import pytest

from tests.params import param_config
from tests.trainers import LORA, PAIR_TRAIN


def test_reward_model_trains_merges_and_scores_text(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.reward_model import RewardScorer, RewardStageConfig, run_reward_model

    cfg = param_config(RewardStageConfig, "reward_model", **{
        "model": str(tiny_model_dir), "train_file": str(prepared / "pairs_train.jsonl"),
        "val_file": str(prepared / "pairs_val.jsonl"), "max_train_samples": 16, "max_val_samples": 3,
        "out_dir": str(tmp_path / "reward"), "checkpoint_dir": str(tmp_path / "ckpt"),
        "live_dir": str(tmp_path / "live"), "lora": LORA, "train": PAIR_TRAIN,
    })
    summary = run_reward_model(cfg)
    held = summary["held_out"]
    assert held["pairs"] == 3 and 0.0 <= held["accuracy"] <= 1.0
    assert held["mean_margin"] == pytest.approx(held["mean_chosen"] - held["mean_rejected"], abs=1e-5)
    assert 0.0 <= held["likelihood_baseline_accuracy"] <= 1.0
    assert not (tmp_path / "reward" / "adapter_config.json").exists()  # merged: standalone
    scorer = RewardScorer(tmp_path / "reward")
    scores = scorer.score(["What is 2 + 3?", "What is 2 + 3?"], ["The answer is \\boxed{5}.", "It is 6."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert scores == scorer.score(["What is 2 + 3?"] * 2, ["The answer is \\boxed{5}.", "It is 6."])


def test_a_bf16_reward_model_trains_its_score_head_in_float32(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.reward_model import RewardStageConfig, run_reward_model

    cfg = param_config(RewardStageConfig, "reward_model", **{
        "model": str(tiny_model_dir), "train_file": str(prepared / "pairs_train.jsonl"),
        "val_file": str(prepared / "pairs_val.jsonl"), "max_train_samples": 4, "max_val_samples": 2,
        "out_dir": str(tmp_path / "reward"), "checkpoint_dir": str(tmp_path / "ckpt"), "dtype": "bfloat16",
        "live_dir": str(tmp_path / "live"), "lora": LORA, "train": PAIR_TRAIN, "likelihood_baseline": False,
    })
    summary = run_reward_model(cfg)
    assert summary["trainable_dtype"] == "float32" and summary["pairs_too_long"] == 0


def test_every_process_saves_the_reward_model_so_sharded_weights_are_gathered(tmp_path, tiny_model_dir, prepared,
                                                                             monkeypatch):
    """Under FSDP or ZeRO-3 trainer.save_model is a collective: a process that skipped it would leave
    the main one waiting, or saving its own shard."""
    from types import SimpleNamespace

    from mathpipe.training import reward_model, trainer

    saved = []
    import torch

    worker = SimpleNamespace(is_main_process=False, num_processes=2, wait_for_everyone=lambda: None,
                             device=torch.device("cpu"))
    monkeypatch.setattr(trainer, "run_trainer", lambda *a, **k: SimpleNamespace(trainer="the trainer", peft_config=None))
    monkeypatch.setattr(trainer, "distributed_state", lambda *a: worker)
    monkeypatch.setattr(trainer, "save_trained", lambda run_trainer, tokenizer, out: saved.append((run_trainer, out)))
    cfg = param_config(reward_model.RewardStageConfig, "reward_model", **{
        "model": str(tiny_model_dir), "train_file": str(prepared / "pairs_train.jsonl"),
        "val_file": str(prepared / "pairs_val.jsonl"), "max_train_samples": 4, "max_val_samples": 2,
        "out_dir": str(tmp_path / "reward"), "checkpoint_dir": str(tmp_path / "ckpt"),
        "live_dir": str(tmp_path / "live"), "lora": LORA, "train": PAIR_TRAIN,
    })
    assert reward_model.run_reward_model(cfg) == {"processes": 2}
    assert saved == [("the trainer", tmp_path / "ckpt" / "trained")]
    assert not (tmp_path / "reward").exists()  # the main process writes the model


def test_likelihood_baseline_is_the_models_own_loss_on_the_answer_tokens(tiny_model_dir):
    import torch

    from mathpipe import prompts
    from mathpipe.models import load_causal_lm, load_tokenizer
    from mathpipe.training.reward_model import mean_response_logprobs

    questions = ["What is 2 + 3?", "Tom has 4 apples and buys 7 more. How many apples does he have?"]
    answers = ["<think>\n2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}.", "It is \\boxed{11}."]
    batched = mean_response_logprobs(tiny_model_dir, questions, answers, batch_size=2)
    one_by_one = [mean_response_logprobs(tiny_model_dir, [q], [a], batch_size=1)[0]
                  for q, a in zip(questions, answers)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)  # right padding changes nothing

    # The oracle: transformers' own loss with the prompt masked is minus the mean answer log-probability.
    tokenizer, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, device="cpu")
    for question, answer, mean in zip(questions, answers, batched):
        turns = prompts.messages(question)
        head = tokenizer(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": answer}],
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
        assert full[:len(head)] == head
        labels = [-100] * len(head) + full[len(head):]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([full]), labels=torch.tensor([labels])).loss.item()
        assert mean == pytest.approx(-loss, abs=1e-5)
