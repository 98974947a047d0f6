"""The one prompt registry: every stage builds prompts and targets here, so training, sampling,
evaluation and attention plots see the same text.

A problem becomes a chat turn (`messages(question)`), rendered with the tokenizer's own chat template
(`render_prompt`); a worked solution becomes the assistant turn (`response(reasoning, answer)`):

    <think>
    12 + 7 = 19
    </think>

    The answer is \\boxed{19}.
"""

from __future__ import annotations

import hashlib

from mathpipe.errors import ConfigError

# name -> instruction appended to the question. The Alpaca `instruction` column holds it too.
INSTRUCTIONS: dict[str, str] = {
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
}
DEFAULT_TEMPLATE = "boxed"

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def instruction(template: str = DEFAULT_TEMPLATE) -> str:
    try:
        return INSTRUCTIONS[template]
    except KeyError:
        known = ", ".join(sorted(INSTRUCTIONS))
        raise ConfigError(f"unknown prompt template '{template}' (known: {known})") from None


def user_message(question: str, template: str = DEFAULT_TEMPLATE) -> str:
    return f"{question.strip()}\n{instruction(template)}"


def messages(question: str, template: str = DEFAULT_TEMPLATE) -> list[dict]:
    return [{"role": "user", "content": user_message(question, template)}]


def response(reasoning: str, answer: str) -> str:
    """The assistant target: reasoning inside <think>, the final answer in \\boxed{}."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\nThe answer is \\boxed{{{answer.strip()}}}."


def render_prompt(tokenizer, question: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The generation prompt: the chat template applied to the user turn, ready for the assistant."""
    return tokenizer.apply_chat_template(
        messages(question, template), tokenize=False, add_generation_prompt=True
    )


def template_hash(tokenizer, template: str = DEFAULT_TEMPLATE) -> str:
    """Identifies the exact prompt text a model saw: instruction + the tokenizer's chat template."""
    chat_template = getattr(tokenizer, "chat_template", None) or ""
    digest = hashlib.sha256(f"{instruction(template)}\0{chat_template}".encode()).hexdigest()
    return digest[:16]
