"""GRPO's reward path held to the evaluation path: one completion, one verdict, whichever path scores it.

GRPO's reward sees what TRL hands it: prompts rendered by TRL's own apply_chat_template call, the
completion decoded with skip_special_tokens=True, its ids cut after the first EOS. Evaluation sees
what the pipeline's generators hand it: the prompt rendered by `prompts.render_prompt`, the new tokens
decoded by `decoding.decode_completion`. A difference anywhere (template kwargs, a stripped </think>,
an EOS the reward misses) would train GRPO towards a different target from the one it is measured on.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathpipe import answers, prompts
from mathpipe.evaluation.evaluate import _prediction
from mathpipe.generation import make_generator
from mathpipe.generation.decoding import decode_completion
from mathpipe.generation.settings import EngineSettings
from mathpipe.io import read_jsonl
from mathpipe.training.grpo_rewards import RewardSettings, reward_functions
from tests.params import param_config, params_section

STOP = params_section("evaluate.generation")["stop"]
THINKING = params_section("prompt")["chat_template_kwargs"]


@pytest.fixture(scope="module")
def generator(pretrained_model_dir):
    """The evaluation's transformers generator: its tokenizer, EOS ids and special tokens."""
    engine = param_config(EngineSettings, "evaluate.engine", backend="transformers")
    gen = make_generator(str(pretrained_model_dir), engine)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def records(prepared):
    return read_jsonl(prepared / "sft_train.jsonl")[:12]


def evaluation_verdict(generator, row: dict, new_tokens: list[int], thinking_opened: bool) -> dict:
    completion = decode_completion(generator.tokenizer, new_tokens, generator.eos_ids, STOP,
                                   generator.special_tokens)
    return _prediction({"id": row["id"], "question": row["problem"], "gold": row["answer"]}, 0, completion,
                       thinking_opened)


def trl_view(tokenizer, new_tokens: list[int]) -> tuple[list[dict], list[int]]:
    """What GRPOTrainer passes a reward function for these new tokens (TRL 1.16, conversational data)."""
    eos = tokenizer.eos_token_id
    ids = new_tokens[: new_tokens.index(eos) + 1] if eos in new_tokens else list(new_tokens)
    return [{"role": "assistant", "content": tokenizer.decode(ids, skip_special_tokens=True)}], ids


def template_opens_thinking(tokenizer) -> bool:
    return answers.opens_thinking(prompts.render_prompt(tokenizer, "?", chat_template_kwargs=THINKING))


def reward_and_evaluation(generator, row, new_tokens, max_completion_length=512):
    tokenizer = generator.tokenizer
    thinking_opened = template_opens_thinking(tokenizer)
    (accuracy,), _ = reward_functions(RewardSettings(weights={"accuracy": 1.0}, overlong_buffer=64),
                                      max_completion_length, generator.eos_ids, thinking_opened)
    completion, ids = trl_view(tokenizer, new_tokens)
    [reward] = accuracy(prompts=[prompts.messages(row["problem"])], completions=[completion],
                        completion_ids=[ids], answer=[row["answer"]])
    return reward, evaluation_verdict(generator, row, new_tokens, thinking_opened)


def target_tokens(generator, row: dict, answer: str | None = None, end: bool = True) -> list[int]:
    """The SFT target of a record (an R1-style trace ending in \\boxed{gold}) as new tokens."""
    text = row["messages"][-1]["content"]
    if answer is not None:
        text = text.replace(f"\\boxed{{{row['answer']}}}", f"\\boxed{{{answer}}}")
    ids = generator.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [generator.tokenizer.eos_token_id] if end else ids


def test_grpo_renders_each_prompt_to_the_tokens_evaluation_generates_from(generator, records):
    tokenizer = generator.tokenizer
    for kwargs in (THINKING, {"enable_thinking": False}):
        for row in records:
            trl_ids = tokenizer.apply_chat_template(conversation=[prompts.messages(row["problem"])],
                                                    add_generation_prompt=True, tokenize=True, return_dict=True,
                                                    **kwargs)["input_ids"][0]
            rendered = prompts.render_prompt(tokenizer, row["problem"], chat_template_kwargs=kwargs)
            assert trl_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_right_wrong_and_cut_off_completions_get_one_verdict_from_both_paths(generator, records):
    row = records[0]
    cases = {
        "right, ended": (target_tokens(generator, row), True),
        "wrong, ended": (target_tokens(generator, row, answer=str(int(row["answer"]) + 1)), False),
        "right, cut at the token limit": (target_tokens(generator, row, end=False), False),
        "right, then padding": (target_tokens(generator, row) + [generator.tokenizer.pad_token_id] * 3, True),
    }
    for name, (tokens, expected) in cases.items():
        reward, prediction = reward_and_evaluation(generator, row, tokens)
        assert (reward == 1.0) == prediction["correct"] == expected, name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_cut_of_any_target_gets_one_verdict_from_both_paths(generator, records, data):
    row = data.draw(st.sampled_from(records))
    tokens = target_tokens(generator, row, end=False)
    cut = data.draw(st.integers(1, len(tokens)))
    ended = data.draw(st.booleans())
    tokens = tokens[:cut] + ([generator.tokenizer.eos_token_id] if ended else [])
    reward, prediction = reward_and_evaluation(generator, row, tokens)
    assert (reward == 1.0) == prediction["correct"]


def test_a_grpo_step_scores_its_own_completions_as_evaluation_would(tmp_path, pretrained_model_dir, prepared,
                                                                   generator):
    """The real GRPOTrainer: every completion its reward function saw, re-scored from its token ids
    by the evaluation's decoding and checker, gets the same text and the same verdict."""
    from mathpipe.training.grpo import run_grpo
    from tests.test_grpo import grpo_config

    seen = []
    cfg = grpo_config(tmp_path, pretrained_model_dir, prepared, train={"max_completion_length": 48, "max_steps": 2},
                      lora=None, rewards={"weights": {"accuracy": 1.0}, "overlong_buffer": 8})
    run_grpo(cfg, chat_template_kwargs=THINKING, verdicts=seen)

    assert len(seen) == 2 * 2
    for row in seen:
        prediction = evaluation_verdict(generator, {"id": row["id"], "problem": "?", "answer": row["answer"]},
                                        list(row["completion_ids"]), template_opens_thinking(generator.tokenizer))
        assert row["completion"][0]["content"] == prediction["output"]
        assert (row["accuracy"] == 1.0) == prediction["correct"]


def test_reward_parity_pairs_grpos_pass_rates_with_rejection_samplings(tmp_path, pretrained_model_dir, prepared):
    """The measurement tool on the fixture model: GRPOTrainer, its weights left as they were, samples
    every one of rejection sampling's prompts n times; the comparison pairs them by prompt id."""
    from mathpipe.io import write_jsonl
    from mathpipe.tools.reward_parity import parity
    from tests.params import params_with

    rows = read_jsonl(prepared / "sft_train.jsonl")[:3]
    write_jsonl(tmp_path / "three.jsonl", rows)
    samples = [{"id": r["id"], "sample": k, "correct": k == 0} for r in rows for k in range(2)]
    write_jsonl(tmp_path / "rejection" / "samples.jsonl", samples)
    params = params_with({
        "rejection_sampling": {"policy": str(pretrained_model_dir), "prompts_file": str(tmp_path / "three.jsonl"),
                               "max_prompts": 3, "out_dir": str(tmp_path / "rejection"),
                               "generation": {"n": 2, "max_new_tokens": 16}},
    })

    result = parity(params)
    assert result["prompts"] == 3 and result["completions"] == 3 * 2 and result["n"] == 3
    assert result["pass_rate_rejection_sampling"] == 0.5
    assert 0 <= result["pass_rate_grpo_reward"] <= 1
    assert result["a"] == "rejection_sampling" and result["b"] == "grpo_reward"
