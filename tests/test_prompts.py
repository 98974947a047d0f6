"""The prompt registry's thinking switch (params.yaml `prompt.chat_template_kwargs`): one value that
every rendering sees, with the tiny model's template and with Qwen3's own (as TRL ships it)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import trl
from hypothesis import given
from hypothesis import strategies as st

from mathpipe import prompts
from mathpipe.errors import ConfigError
from mathpipe.training import trainer
from tests.params import param_config, params_section

QWEN3_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
OFF = {"enable_thinking": False}
EMPTY_THINKING = "<think>\n\n</think>\n\n"


@pytest.fixture(params=["tiny", "qwen3.jinja", "qwen3_training.jinja"])
def tokenizer(request, tiny_tokenizer):
    """The tiny tokenizer with its own template, Qwen3's, or the training variant the real profile uses."""
    if request.param == "tiny":
        return tiny_tokenizer
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (QWEN3_TEMPLATES / request.param).read_text(encoding="utf-8")
    return tok


def test_thinking_off_starts_the_answer_with_an_empty_thinking_block(tokenizer):
    on = prompts.render_prompt(tokenizer, "What is 2 + 3?")
    off = prompts.render_prompt(tokenizer, "What is 2 + 3?", chat_template_kwargs=OFF)
    assert not on.endswith(EMPTY_THINKING) and off == on + EMPTY_THINKING


@pytest.mark.parametrize("kwargs", [{}, OFF])
def test_the_generation_prompt_is_where_the_target_starts_in_either_mode(tokenizer, kwargs):
    """What TRL's DPO and the likelihood baseline rely on: prompt + target renders as the generation
    prompt followed by the target, so the answer tokens are told apart exactly."""
    target = prompts.response("2 + 3 = 5", "5", thinking=prompts.thinking(kwargs))
    turns = prompts.messages("What is 2 + 3?")
    head = prompts.render(tokenizer, turns, kwargs, add_generation_prompt=True)
    full = prompts.render(tokenizer, turns + [{"role": "assistant", "content": target}], kwargs)
    assert full.startswith(head)
    answer = full[len(head):]
    assert answer.startswith("2 + 3 = 5" if kwargs else "<think>\n2 + 3 = 5\n</think>")
    assert "\\boxed{5}" in answer


def test_targets_without_thinking_carry_the_reasoning_in_the_answer():
    assert prompts.response("2 + 3 = 5", "5") == "<think>\n2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}."
    assert prompts.response("2 + 3 = 5", "5", thinking=False) == "2 + 3 = 5\n\nThe answer is \\boxed{5}."
    trace = "<think>\nlet me add: 5\n</think>\n\n2 + 3 = 5, so \\boxed{5}."
    assert prompts.assistant_text(trace) == trace
    assert prompts.assistant_text(trace, thinking=False) == "2 + 3 = 5, so \\boxed{5}."
    # a solution written without thinking (an external preference set) becomes an SFT-style target
    assert prompts.assistant_text("2 + 3 = 5", answer="5") == prompts.response("2 + 3 = 5", "5")
    assert prompts.assistant_text("no answer here") == "<think>\nno answer here\n</think>"


@given(st.text(alphabet=st.sampled_from("ab =5\n"), min_size=1), st.sampled_from(["5", "12", "\\frac{1}{2}"]))
def test_the_final_answer_survives_either_mode(reasoning, answer):
    from mathpipe.answers import final_answer

    for thinking in (True, False):
        assert final_answer(prompts.response(reasoning, answer, thinking)) == (answer, None)


def test_external_answers_render_like_sft_records_with_qwen3s_template(tiny_tokenizer):
    """Qwen3's template gives an answer without a thinking block an empty one: the distilabel or
    Math-Step-DPO solution must not look like a non-thinking answer next to thinking SFT records."""
    from mathpipe.data.pairs import convert_pair

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = (QWEN3_TEMPLATES / "qwen3_training.jinja").read_text(encoding="utf-8")
    row = {"instruction": "What is 6 * 7?", "chosen_response": "6 * 7 = 42", "rejected_response": "6 * 7 = 43"}
    pair = convert_pair(row, "distilabel", Path("x.jsonl"), 0, prompts.DEFAULT_TEMPLATE)
    sft_like = prompts.render(tok, pair["prompt"] + [{"role": "assistant",
                                                      "content": prompts.response("6 * 7 = 42", "42")}])
    assert prompts.render(tok, pair["prompt"] + pair["chosen"]) == sft_like
    assert EMPTY_THINKING not in sft_like


def test_template_kwargs_travel_with_every_training_example():
    rows = [{"prompt": [{"role": "user", "content": "q"}], "chosen": [], "rejected": []}]
    assert prompts.with_template_kwargs(rows, {}) is rows  # the default adds no column
    dataset = trainer.trainer_dataset(rows, OFF)
    assert dataset[0]["chat_template_kwargs"] == OFF and trainer.trainer_dataset([], OFF) is None


def test_trl_renders_the_dpo_prompt_with_the_switch(tiny_model_dir, tiny_tokenizer, tmp_path, monkeypatch):
    """The DPO stage's dataset as TRL tokenizes it: the prompt ends with the empty thinking block."""
    from trl import DPOTrainer

    from mathpipe.io import write_jsonl
    from mathpipe.training.dpo import DPOStageConfig, run_dpo

    pair = {"prompt": prompts.messages("What is 6 * 7?"),
            "chosen": [{"role": "assistant", "content": prompts.response("6 * 7 = 42", "42", thinking=False)}],
            "rejected": [{"role": "assistant", "content": prompts.response("6 * 7 = 43", "43", thinking=False)}]}
    write_jsonl(tmp_path / "train.jsonl", [pair] * 4)
    write_jsonl(tmp_path / "val.jsonl", [pair])
    seen = {}

    def capture(self, **kwargs):  # stand-in for training: keep what TRL built, train nothing
        seen["prompt"] = self.processing_class.decode(self.train_dataset[0]["prompt_ids"])
        seen["chosen"] = self.processing_class.decode(self.train_dataset[0]["chosen_ids"])

    monkeypatch.setattr(DPOTrainer, "train", capture)
    cfg = param_config(DPOStageConfig, "dpo", **{
        "model": str(tiny_model_dir), "pairs": {**params_section("dpo.pairs"), "train_files": str(tmp_path / "train.jsonl"),
                                            "val_files": str(tmp_path / "val.jsonl")},
        "out_dir": str(tmp_path / "dpo"), "checkpoint_dir": str(tmp_path / "ckpt"), "live_dir": str(tmp_path / "live"),
        "lora": {**params_section("dpo.lora"), "r": 4, "lora_alpha": 8},
        "train": {"max_steps": 1, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
                  "gradient_checkpointing": False}})
    run_dpo(cfg, chat_template_kwargs=OFF)
    assert seen["prompt"] == prompts.render_prompt(tiny_tokenizer, "What is 6 * 7?", chat_template_kwargs=OFF)
    assert seen["chosen"].startswith("6 * 7 = 42")


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"enable_thinking": "no"}, r"prompt\.chat_template_kwargs\.enable_thinking"),
    ({"add_generation_prompt": True}, r"prompt\.chat_template_kwargs\.add_generation_prompt"),
    ({"tokenize": False}, r"prompt\.chat_template_kwargs\.tokenize"),
    ({"x": [1, 2]}, r"prompt\.chat_template_kwargs\.x"),
    ({"not a name": 1}, r"prompt\.chat_template_kwargs"),
])
def test_bad_template_kwargs_name_their_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        param_config(prompts.PromptConfig, "prompt", **{"chat_template_kwargs": kwargs})


def test_the_switch_changes_the_prompt_hash_the_metrics_record(tiny_tokenizer):
    default = prompts.template_hash(tiny_tokenizer)
    assert prompts.template_hash(tiny_tokenizer, chat_template_kwargs={}) == default
    assert prompts.template_hash(tiny_tokenizer, chat_template_kwargs=OFF) != default
