"""GRPO's rewards: the answer checker's verdicts in TRL's reward-function contract."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mathpipe.errors import ConfigError
from mathpipe.training.grpo_rewards import RewardSettings, overlong_penalty, reward_functions
from tests.params import param_config

EOS = 2
FINISHED = "<think>\n12 + 7 = 19, and 19 * 2 = 38.\n</think>\n\nThe answer is \\boxed{38}."
UNFINISHED_WITH_A_NUMBER = "<think>\n12 + 7 = 19, and 19 * 2 = 38, so maybe 38"
TWICE_BOXED = "<think>\nguess \\boxed{38}\n</think>\n\n\\boxed{38}"


def rewards(settings: RewardSettings, completions, ids=None, answer=None, prompts=None, max_len=16):
    funcs, weights = reward_functions(settings, max_completion_length=max_len, end_token_ids={EOS})
    ids = ids if ids is not None else [[5, 6, EOS]] * len(completions)
    return {f.__name__: f(prompts=prompts or ["q"] * len(completions), completions=completions, completion_ids=ids,
                          answer=answer or ["38"] * len(completions), trainer_state=None)
            for f in funcs}, weights


def test_a_finished_correct_answer_earns_accuracy_and_format():
    got, weights = rewards(param_config(RewardSettings, "grpo.rewards", weights={"accuracy": 1.0, "format": 0.25}), [FINISHED])
    assert got == {"accuracy": [1.0], "format": [1.0]}
    assert weights == [1.0, 0.25]


def test_unfinished_reasoning_earns_nothing_though_it_ends_on_the_gold_number():
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards", weights={"accuracy": 1.0, "format": 1.0}), [UNFINISHED_WITH_A_NUMBER])
    assert got == {"accuracy": [0.0], "format": [0.0]}


def test_a_completion_cut_at_the_token_limit_earns_nothing():
    """TRL keeps the EOS of a completion that ended: one whose last token is not an end token was cut."""
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards", weights={"accuracy": 1.0, "format": 1.0}), [FINISHED, FINISHED],
                     ids=[[5, 6, 7], [5, 6, EOS]])
    assert got == {"accuracy": [0.0, 1.0], "format": [0.0, 1.0]}


def test_a_prompt_that_opened_the_thinking_needs_its_close():
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards"), ["19 * 2 = 38"], prompts=["<|im_start|>assistant\n<think>\n"])
    assert got == {"accuracy": [0.0]}
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards"), ["19 * 2 = 38\n</think>\n\\boxed{38}"], prompts=["<|im_start|>assistant\n<think>\n"])
    assert got == {"accuracy": [1.0]}


def test_conversational_completions_and_other_golds():
    completions = [[{"role": "assistant", "content": FINISHED}]] * 2
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards"), completions, answer=["38", "\\frac{76}{2}"])
    assert got == {"accuracy": [1.0, 1.0]}
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards"), completions, answer=["39", "-38"])
    assert got == {"accuracy": [0.0, 0.0]}


@pytest.mark.parametrize("text, expected", [
    (FINISHED, 1.0),
    (TWICE_BOXED, 0.0),                               # one box in the thinking, one after it
    ("<think>\nso \\boxed{38}\n</think>\n\n38", 0.0),  # boxed only inside the reasoning
    ("19 * 2 = 38. The answer is 38.", 0.0),          # right, but not boxed
    ("19 * 2 = 38, so \\boxed{38}.", 1.0),             # no thinking block: one box is enough
])
def test_the_format_reward_wants_one_box_after_the_reasoning(text, expected):
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards", weights={"format": 1.0}), [text])
    assert got == {"format": [expected]}


def test_overlong_shaping_penalises_only_the_last_tokens():
    got, _ = rewards(param_config(RewardSettings, "grpo.rewards", weights={"overlong": 1.0}, overlong_buffer=4), [FINISHED] * 3,
                     ids=[[1] * 12, [1] * 14, [1] * 16], max_len=16)
    assert got == {"overlong": [0.0, -0.5, -1.0]}


@given(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 512))
def test_overlong_penalty_is_bounded_and_never_rewards_length(length, max_length, buffer):
    penalty = overlong_penalty(length, max_length, buffer)
    assert -1.0 <= penalty <= 0.0
    assert overlong_penalty(length + 1, max_length, buffer) <= penalty


@pytest.mark.parametrize("weights, key", [
    ({}, "grpo.rewards.weights"),
    ({"accuracy": 1.0, "lenght": 0.1}, "grpo.rewards.weights.lenght"),
    ({"accuracy": "high"}, "grpo.rewards.weights.accuracy"),
])
def test_bad_reward_settings_name_their_key(weights, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        param_config(RewardSettings, "grpo.rewards", weights=weights).validate("grpo.rewards")


def test_a_template_that_opens_the_thinking_is_told_once_for_conversational_prompts():
    funcs, _ = reward_functions(param_config(RewardSettings, "grpo.rewards"), end_token_ids={EOS}, thinking_opened=True)
    conversational = [[{"role": "user", "content": "What is 19 * 2?"}]] * 2
    completions = ["19 * 2 = 38", "19 * 2 = 38\n</think>\n\\boxed{38}"]
    assert funcs[0](prompts=conversational, completions=completions, completion_ids=[[1, EOS]] * 2,
                    answer=["38", "38"]) == [0.0, 1.0]
