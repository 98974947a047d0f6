"""The one prompt registry: every stage builds prompts and targets here, so training, sampling,
evaluation and attention plots see the same text.

A problem becomes a chat turn (`messages(question)`), rendered with the tokenizer's own chat template
(`render_prompt`, `render`); a worked solution becomes the assistant turn (`response(reasoning, answer)`):

    <think>
    12 + 7 = 19
    </think>

    The answer is \\boxed{19}.

One switch, params.yaml `prompt.chat_template_kwargs`, reaches every rendering: it is passed to the
chat template (Qwen3: `{enable_thinking: false}` starts the answer with an empty thinking block), and
with thinking off the targets carry their reasoning in the answer itself (`response`, `assistant_text`),
as Qwen3's non-thinking mode writes it. TRL's trainers read it per example (`with_template_kwargs`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathpipe.errors import ConfigError

# name -> instruction appended to the question. The Alpaca `instruction` column holds it too.
INSTRUCTIONS: dict[str, str] = {
    "boxed": "Please reason step by step, and put your final answer within \\boxed{}.",
}
DEFAULT_TEMPLATE = "boxed"

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# apply_chat_template's own arguments: the pipeline sets them, a template kwarg may not.
_RESERVED_KWARGS = ("conversation", "messages", "tools", "documents", "add_generation_prompt",
                    "continue_final_message", "tokenize", "padding", "truncation", "max_length",
                    "return_tensors", "return_dict", "return_assistant_tokens_mask", "tokenizer_kwargs")


@dataclass(kw_only=True)
class PromptConfig:
    """params.yaml `prompt`: how every stage renders chat turns."""

    # Extra variables for the chat template, e.g. {enable_thinking: false} for Qwen3's non-thinking mode.
    chat_template_kwargs: dict[str, Any]

    def validate(self, prefix: str) -> None:
        key = f"{prefix}.chat_template_kwargs"
        for name, value in self.chat_template_kwargs.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ConfigError(f"{key}: '{name}' is not a template variable name")
            if name in _RESERVED_KWARGS:
                raise ConfigError(f"{key}.{name}: set by the pipeline itself, not a template variable")
            if not (value is None or isinstance(value, (bool, int, float, str))):
                raise ConfigError(f"{key}.{name}: expected true/false, a number or a string, got {value!r}")
        if not isinstance(self.chat_template_kwargs.get("enable_thinking", True), bool):
            raise ConfigError(f"{key}.enable_thinking: expected true or false, "
                              f"got {self.chat_template_kwargs['enable_thinking']!r}")

    @property
    def thinking(self) -> bool:
        return thinking(self.chat_template_kwargs)


def thinking(chat_template_kwargs: dict | None) -> bool:
    """Thinking mode is on unless the template is told `enable_thinking: false`."""
    return (chat_template_kwargs or {}).get("enable_thinking", True) is not False


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


def response(reasoning: str, answer: str | None, thinking: bool = True) -> str:
    """The assistant target: reasoning inside <think> (in the answer itself with thinking off), then
    the final answer in \\boxed{} (none when `answer` is None)."""
    final = f"The answer is \\boxed{{{answer.strip()}}}." if answer is not None else ""
    if not thinking:
        return f"{reasoning.strip()}\n\n{final}".strip()
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{final}".rstrip()


def without_thinking(text: str) -> str:
    """What follows the last closed thinking block (the whole text when it has none)."""
    return text.rsplit(THINK_CLOSE, 1)[1].strip() if THINK_CLOSE in text else text.strip()


def assistant_text(text: str, thinking: bool = True, answer: str | None = None) -> str:
    """A solution written elsewhere (an R1 trace, an external preference set's answer) in the form of
    the pipeline's own targets: thinking on, a text without a thinking block becomes the reasoning
    and `answer` (when known) the final line; thinking off, the thinking block is dropped."""
    if not thinking:
        return without_thinking(text)
    return text if THINK_CLOSE in text else response(text, answer)


def chat_template_file(name: str, key: str) -> Path:
    """A jinja file, or `trl:<file>` for one of the templates TRL ships (trl/chat_templates/)."""
    if name.startswith("trl:"):
        import trl

        path = Path(trl.__file__).parent / "chat_templates" / name.removeprefix("trl:")
    else:
        path = Path(name)
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return path


def render(tokenizer, turns: list[dict], chat_template_kwargs: dict | None = None,
           add_generation_prompt: bool = False) -> str:
    """Chat turns as text, with the tokenizer's chat template and the pipeline's template kwargs."""
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **(chat_template_kwargs or {}))


def render_prompt(tokenizer, question: str, template: str = DEFAULT_TEMPLATE,
                  chat_template_kwargs: dict | None = None) -> str:
    """The generation prompt: the chat template applied to the user turn, ready for the assistant."""
    return render(tokenizer, messages(question, template), chat_template_kwargs, add_generation_prompt=True)


def with_template_kwargs(rows: list[dict], chat_template_kwargs: dict | None) -> list[dict]:
    """Rows for a TRL trainer, each carrying the template kwargs in the column TRL reads per example."""
    if not chat_template_kwargs:
        return rows  # an empty mapping is not a column Arrow can store
    return [{**row, "chat_template_kwargs": dict(chat_template_kwargs)} for row in rows]


def template_hash(tokenizer, template: str = DEFAULT_TEMPLATE, chat_template_kwargs: dict | None = None) -> str:
    """Identifies the exact prompt text a model saw: instruction + the chat template + its kwargs."""
    chat_template = getattr(tokenizer, "chat_template", None) or ""
    kwargs = json.dumps(chat_template_kwargs or {}, sort_keys=True)
    parts = [instruction(template), chat_template] + ([kwargs] if chat_template_kwargs else [])
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    return digest[:16]
