"""Verifiable rewards for GRPO, over the one answer checker, in TRL's reward-function contract.

    funcs, weights = reward_functions(from_params(RewardSettings, "grpo.rewards", weights={"accuracy": 1.0}),
                                      max_completion_length=256, end_token_ids={tokenizer.eos_token_id})
    GRPOTrainer(..., reward_funcs=funcs, args=GRPOConfig(reward_weights=weights, ...))

Each function is called by TRL as `f(prompts=..., completions=..., completion_ids=..., answer=...)`:
completions are strings, or for conversational data lists with one assistant message; the dataset's
columns arrive as keywords (the gold answer is the `answer` column, as prepare writes it). A
completion is unfinished, and earns no accuracy or format reward, when it opened a thinking block it
never closed, or when its last token is not an end token (TRL cut it at max_completion_length): the
same rule evaluation and rejection sampling score by (`answers.final_answer`).

    accuracy   1 when the final answer equals the gold answer, else 0
    format     1 when the answer is boxed exactly once, after the reasoning (after </think>)
    overlong   0 up to max_completion_length - overlong_buffer tokens, then down to -1 at the limit
               (DAPO's soft overlong punishment: a cut-off completion costs more than a long one)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mathpipe import answers, prompts
from mathpipe.config import check

REWARD_NAMES = ("accuracy", "format", "overlong")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(kw_only=True)
class RewardSettings:
    """Which rewards GRPO sums, with their weights (TRL's `reward_weights`)."""

    weights: dict[str, float]
    overlong_buffer: int  # tokens before the limit where the overlong penalty starts

    def validate(self, prefix: str) -> None:
        check(bool(self.weights), f"{prefix}.weights", "must name at least one reward")
        for name, weight in self.weights.items():
            check(name in REWARD_NAMES, f"{prefix}.weights.{name}",
                  f"unknown reward '{name}' (known: {', '.join(REWARD_NAMES)})")
            check(isinstance(weight, (int, float)) and not isinstance(weight, bool), f"{prefix}.weights.{name}",
                  f"must be a number, got {weight!r}")
        check(self.overlong_buffer > 0, f"{prefix}.overlong_buffer", f"must be > 0, got {self.overlong_buffer}")


def completion_text(completion) -> str:
    """The generated text of one completion: a string, or TRL's conversational [{"role", "content"}]."""
    if isinstance(completion, str):
        return completion
    return "".join(turn.get("content") or "" for turn in completion)


def prompt_opens_thinking(prompt) -> bool:
    """True when the prompt ends inside an open <think> block (a template that starts the thinking)."""
    return isinstance(prompt, str) and answers.opens_thinking(prompt)


def finish_reason(ids, end_token_ids: set[int]) -> str:
    """'length' when a completion's last token ends nothing (TRL's own test for a truncated
    completion: it cuts at max_completion_length, and keeps the EOS of one that ended)."""
    return "length" if ids is not None and len(ids) and ids[-1] not in end_token_ids else "stop"


def _finals(prompts, completions, completion_ids, end_token_ids, thinking_opened):
    ids = completion_ids if completion_ids is not None else [None] * len(completions)
    prompts = prompts if prompts is not None else [None] * len(completions)
    return [answers.final_answer(completion_text(c), finish_reason(i, end_token_ids),
                                 thinking_opened or prompt_opens_thinking(p))
            for p, c, i in zip(prompts, completions, ids)]


def reward_functions(settings: RewardSettings, max_completion_length: int | None = None,
                     end_token_ids=(), thinking_opened: bool = False) -> tuple[list[Callable], list[float]]:
    """(reward functions, weights) in the order of `settings.weights`, for GRPOTrainer and GRPOConfig.
    end_token_ids: the tokenizer's EOS (and pad) ids, which end a finished completion; thinking_opened:
    the chat template's generation prompt opens a <think> block (conversational prompts do not show it)."""
    eos = set(end_token_ids)

    def accuracy_reward(prompts=None, completions=(), completion_ids=None, answer=(), **_) -> list[float]:
        finals = _finals(prompts, completions, completion_ids, eos, thinking_opened)
        return [float(reason is None and answers.is_equivalent(extracted, gold))
                for (extracted, reason), gold in zip(finals, answer)]

    def format_reward(prompts=None, completions=(), completion_ids=None, **_) -> list[float]:
        finals = _finals(prompts, completions, completion_ids, eos, thinking_opened)
        return [float(reason is None and boxed_once_after_reasoning(completion_text(c)))
                for c, (_, reason) in zip(completions, finals)]

    def overlong_reward(completions=(), completion_ids=None, **_) -> list[float]:
        if completion_ids is None or max_completion_length is None:
            return [0.0] * len(completions)
        return [overlong_penalty(len(ids), max_completion_length, settings.overlong_buffer) for ids in completion_ids]

    known = {"accuracy": accuracy_reward, "format": format_reward, "overlong": overlong_reward}
    funcs = []
    for name in settings.weights:
        func = known[name]
        func.__name__ = name  # TRL logs each reward under its function's name: rewards/<name>/mean
        funcs.append(func)
    return funcs, [float(w) for w in settings.weights.values()]


def boxed_once_after_reasoning(text: str) -> bool:
    """Exactly one \\boxed{} in the text, and none inside the thinking block."""
    thinking, _, after = text.rpartition(prompts.THINK_CLOSE)
    return len(_BOXED.findall(after)) == 1 and not _BOXED.search(thinking)


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's soft overlong punishment: 0 up to max_length - buffer, linear to -1 at max_length."""
    start = max_length - buffer
    if length <= start:
        return 0.0
    return -min(1.0, (length - start) / buffer)
