"""GRPO's loss on the completions with a gradient (mathpipe.training.grpo_batch): the same loss and the
same gradients as TRL's own loss over the whole batch, with fewer rows and columns run through the model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe.training.grpo_batch import informative_batch, informative_rows, why_rows_are_needed


def padded_batch(prompt_lengths, completion_lengths, advantages, pad=0):
    """A GRPOTrainer micro-batch: prompts left-padded, completions right-padded, as TRL builds them."""
    width_p, width_c = max(prompt_lengths), max(completion_lengths)
    rows = len(prompt_lengths)
    prompt_ids = torch.full((rows, width_p), pad)
    prompt_mask = torch.zeros((rows, width_p), dtype=torch.long)
    completion_ids = torch.full((rows, width_c), pad)
    completion_mask = torch.zeros((rows, width_c), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompt_lengths, completion_lengths)):
        prompt_ids[i, width_p - p:] = torch.arange(1, p + 1) + 10 * i
        prompt_mask[i, width_p - p:] = 1
        completion_ids[i, :c] = torch.arange(1, c + 1) + 7 * i
        completion_mask[i, :c] = 1
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor(advantages, dtype=torch.float32),
            "num_items_in_batch": completion_mask.sum()}


def test_rows_without_advantage_and_columns_of_padding_are_left_out():
    batch = padded_batch([3, 6, 2, 4], [5, 9, 2, 4], [0.0, 0.0, 1.5, -1.5])
    out = informative_batch(batch)
    assert out["advantages"].tolist() == [1.5, -1.5]
    # rows 2 and 3: prompts of 2 and 4 tokens, completions of 2 and 4
    assert out["prompt_ids"].shape == (2, 4) and out["completion_ids"].shape == (2, 4)
    assert out["prompt_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert out["completion_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["num_items_in_batch"] is batch["num_items_in_batch"]  # the whole batch's count: TRL's normaliser


def test_a_batch_with_no_advantage_keeps_one_row_for_the_graph():
    out = informative_batch(padded_batch([3, 5], [4, 2], [0.0, 0.0]))
    assert out["advantages"].tolist() == [0.0] and out["completion_ids"].shape == (1, 4)


def test_inputs_it_does_not_know_pass_through_whole():
    batch = {**padded_batch([3, 5], [4, 2], [0.0, 1.0]), "pixel_values": torch.zeros(2, 3)}
    assert informative_batch(batch) is batch


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 9), st.integers(1, 12), st.sampled_from([0.0, 0.0, 0.75, -1.25])),
                min_size=1, max_size=10))
def test_every_token_of_every_kept_row_survives(rows):
    prompts, completions, advantages = map(list, zip(*rows))
    out = informative_batch(padded_batch(prompts, completions, advantages))
    kept = [i for i, a in enumerate(advantages) if a != 0] or [0]
    assert out["advantages"].tolist() == [advantages[i] for i in kept]
    assert out["prompt_mask"].sum(1).tolist() == [prompts[i] for i in kept]
    assert out["completion_mask"].sum(1).tolist() == [completions[i] for i in kept]
    assert out["prompt_mask"][:, 0].any() and out["completion_mask"][:, -1].any()  # no column of padding only
    # the kept tokens, in order
    for row, i in enumerate(kept):
        assert out["completion_ids"][row, :completions[i]].tolist() == list(range(1 + 7 * i, completions[i] + 1 + 7 * i))


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def trainer(tmp_path, model_dir, tokenizer, **args):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                        max_completion_length=16, report_to=[], use_cpu=True, gradient_checkpointing=False,
                        **{"beta": 0.0, "loss_type": "dapo", **args})
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "1 + 1?"}]}] * 8)
    built = informative_rows(GRPOTrainer)(model=model, reward_funcs=zero_reward, args=config, train_dataset=data,
                                          processing_class=tokenizer)
    built.current_gradient_accumulation_steps = 1
    built.model.train()
    return built


def loss_and_gradients(compute, model, inputs):
    model.zero_grad()
    loss = compute(model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def real_batch(tokenizer, advantages):
    """Token ids of real prompts and answers of several lengths, as TRL pads them."""
    texts = [("Tom has 3 apples.", "3 + 4 = 7. The answer is 7."), ("How many?", "2"),
             ("Ann reads 12 pages a day for 3 days. How many pages?", "12 * 3 = 36 pages, so \\boxed{36}."),
             ("What is 5 - 2?", "5 - 2 = 3")] * 2
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p, _ in texts]
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] for _, a in texts]
    batch = padded_batch([len(p) for p in prompts], [len(a) for a in answers], advantages, tokenizer.pad_token_id)
    width_p = batch["prompt_ids"].size(1)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        batch["prompt_ids"][i, width_p - len(p):] = torch.tensor(p)
        batch["completion_ids"][i, :len(a)] = torch.tensor(a)
    return batch


def test_the_loss_and_its_gradients_are_trls_own(tmp_path, pretrained_model_dir, tiny_tokenizer):
    from trl import GRPOTrainer

    built = trainer(tmp_path, pretrained_model_dir, tiny_tokenizer)
    assert why_rows_are_needed(built) is None
    # two groups of four: the first uniform (advantage 0 each), the second not; the longest answer is in the first
    inputs = real_batch(tiny_tokenizer, [0.0, 0.0, 0.0, 0.0, 0.9, -0.3, 0.4, -1.0])
    trls_loss, trls_grads = loss_and_gradients(lambda m, x: GRPOTrainer._compute_loss(built, m, x), built.model, inputs)
    loss, grads = loss_and_gradients(built._compute_loss, built.model, inputs)
    assert built._metrics["train"]["loss_rows_fraction"][-1] == 0.5
    assert trls_loss != 0 and torch.allclose(loss, trls_loss, rtol=1e-5, atol=1e-8)
    assert grads.keys() == trls_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, trls_grads[name], rtol=1e-4, atol=1e-8), name


@pytest.mark.parametrize(("args", "reason"), [
    ({"beta": 0.04}, "beta > 0"),
    ({"loss_type": "grpo"}, "loss_type 'grpo'"),
    ({"top_entropy_quantile": 0.2}, "top_entropy_quantile"),
])
def test_settings_where_every_row_counts_keep_trls_whole_batch(tmp_path, pretrained_model_dir, tiny_tokenizer,
                                                                 monkeypatch, args, reason):
    from trl import GRPOTrainer

    built = trainer(tmp_path, pretrained_model_dir, tiny_tokenizer, **args)
    assert reason in why_rows_are_needed(built)
    rows_seen = []
    monkeypatch.setattr(GRPOTrainer, "_compute_loss", lambda self, model, x: rows_seen.append(x["advantages"].size(0)))
    built._compute_loss(built.model, real_batch(tiny_tokenizer, [0.0] * 4 + [1.0, -1.0, 0.5, -0.5]))
    assert rows_seen == [8] and "loss_rows_fraction" not in built._metrics["train"]
