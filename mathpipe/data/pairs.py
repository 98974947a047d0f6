"""Preference pairs from several schemas, all turned into TRL's conversational form.

    rows = read_pairs(paths, "distilabel", template="boxed")
    # [{"prompt": [{"role": "user", ...}], "chosen": [{"role": "assistant", ...}], "rejected": [...]}]

Formats:
- `trl`: {"prompt", "chosen", "rejected"} as chat turns (what prepare and rejection_sampling write).
- `distilabel` (argilla/distilabel-math-preference-dpo): {"instruction", "chosen_response",
  "rejected_response", ...}.
- `math_step_dpo` (xinlai/Math-Step-DPO-10K): {"prompt", "initial_reason_steps", "chosen", "rejected",
  "full_chosen", "full_rejected", "answer", "dataset"}; the pair is the full chosen vs full rejected
  solution (the shared first steps are in both).

External questions get the same user turn as everything else (the prompt registry), and external
answers the form of the pipeline's own targets (`prompts.assistant_text`: with thinking on, the
solution is the reasoning and its extracted answer the boxed final line), so a model trained on them
sees the prompts it is evaluated with and answers as its SFT records do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from mathpipe import prompts
from mathpipe.answers import extract_answer
from mathpipe.data.readers import iter_table_rows
from mathpipe.errors import DataError

PairFormat = Literal["trl", "distilabel", "math_step_dpo"]

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "trl": ("prompt", "chosen", "rejected"),
    "distilabel": ("instruction", "chosen_response", "rejected_response"),
    "math_step_dpo": ("prompt", "full_chosen", "full_rejected"),
}


def _string(row: dict, column: str, path: Path, index: int) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{path}: row {index + 1}: column '{column}' must be a non-empty string")
    return value


def _turns(row: dict, column: str, path: Path, index: int) -> list[dict]:
    value = row.get(column)
    if isinstance(value, str) and value.strip():  # TRL's standard (non-chat) form is accepted too
        role = "user" if column == "prompt" else "assistant"
        return [{"role": role, "content": value}]
    if not (isinstance(value, list) and value
            and all(isinstance(t, dict) and isinstance(t.get("content"), str) and "role" in t for t in value)):
        raise DataError(f"{path}: row {index + 1}: column '{column}' must be chat turns or a non-empty string")
    return [{"role": t["role"], "content": t["content"]} for t in value]


def convert_pair(row: dict, fmt: str, path: Path, index: int, template: str, thinking: bool = True) -> dict:
    def assistant(text: str) -> list[dict]:
        return [{"role": "assistant", "content": prompts.assistant_text(text, thinking, extract_answer(text))}]

    if fmt == "trl":
        return {c: _turns(row, c, path, index) for c in ("prompt", "chosen", "rejected")}
    if fmt == "distilabel":
        question = _string(row, "instruction", path, index)
        chosen, rejected = "chosen_response", "rejected_response"
    elif fmt == "math_step_dpo":
        question = _string(row, "prompt", path, index)
        chosen, rejected = "full_chosen", "full_rejected"
    else:
        raise DataError(f"unknown pair format '{fmt}' (known: {', '.join(REQUIRED_COLUMNS)})")
    return {
        "prompt": prompts.messages(question, template),
        "chosen": assistant(_string(row, chosen, path, index)),
        "rejected": assistant(_string(row, rejected, path, index)),
    }


def iter_pairs(paths: list[Path], fmt: str, template: str = prompts.DEFAULT_TEMPLATE,
               thinking: bool = True) -> Iterator[dict]:
    if fmt not in REQUIRED_COLUMNS:
        raise DataError(f"unknown pair format '{fmt}' (known: {', '.join(REQUIRED_COLUMNS)})")
    for path in paths:
        for i, row in enumerate(iter_table_rows(path, REQUIRED_COLUMNS[fmt])):
            yield convert_pair(row, fmt, path, i, template, thinking)


def read_pairs(paths: list[Path], fmt: str, template: str = prompts.DEFAULT_TEMPLATE,
               limit: int | None = None, thinking: bool = True) -> list[dict]:
    rows: list[dict] = []
    for pair in iter_pairs(paths, fmt, template, thinking):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(pair)
    if not rows:
        raise DataError(f"no preference pairs in {', '.join(map(str, paths)) or '(no files)'}")
    return rows
