"""Training problems with their gold answers, as rejection sampling and GRPO read them.

    rows = read_problems("data/prepared/sft_train.jsonl", max_prompts=400, seed=0, purpose="sample from")

Both stages draw the same seeded subset for the same (file, max_prompts, seed), so their runs can be
compared prompt for prompt.
"""

from __future__ import annotations

import random

from mathpipe.errors import DataError
from mathpipe.io import read_jsonl


def read_problems(path: str, max_prompts: int | None = None, seed: int = 0, purpose: str = "use") -> list[dict]:
    """Rows with `id`, `problem` and `answer` (prepare's SFT records have them); `max_prompts` keeps a
    seeded random subset in file order (None: every row)."""
    rows = read_jsonl(path, required=("id", "problem", "answer"))
    if not rows:
        raise DataError(f"{path}: no prompts to {purpose} (the file is empty)")
    if max_prompts is not None and max_prompts < len(rows):
        keep = sorted(random.Random(seed).sample(range(len(rows)), max_prompts))
        rows = [rows[i] for i in keep]
    return rows
