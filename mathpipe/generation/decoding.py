"""Prompt ids in, Completion out: the same for every backend, so backends differ only in how they decode."""

from __future__ import annotations

from mathpipe.errors import PipelineError
from mathpipe.generation.settings import Completion


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; True if one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def encode_prompts(tokenizer, prompts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each prompt, with a clear error for an empty set, an empty or too long prompt."""
    if not prompts:
        raise PipelineError("no prompts to generate from (the prompt set is empty)")
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            raise PipelineError(f"prompt {i} is empty")
        if max_length and len(row) >= max_length:
            raise PipelineError(
                f"prompt {i} has {len(row)} tokens and the model's maximum length is {max_length}: "
                f"no room left to generate; shorten the prompt or filter long prompts out"
            )
    return ids


def decode_completion(tokenizer, tokens: list[int], eos_ids: set[int], stop: list[str],
                      special_tokens: list[str]) -> Completion:
    """New tokens -> Completion, the same way for every backend: cut at the first EOS, decode with the
    special tokens kept (so a stop string that is one, <|im_start|>, is found), cut at the first stop
    string, then drop the special tokens left before the cut."""
    end = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
    if end is not None:
        tokens = tokens[:end]
    text, stopped = truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=False), stop)
    for special in special_tokens:
        text = text.replace(special, "")
    finished = end is not None or stopped
    return Completion(text=text, num_tokens=len(tokens), finish_reason="stop" if finished else "length")
