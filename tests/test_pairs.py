"""Preference-pair formats (mathpipe.data.pairs): schemas checked, external sets as chat pairs.
"""

from __future__ import annotations

import pytest

from mathpipe.errors import DataError
from mathpipe.io import write_jsonl


def test_pair_file_with_missing_columns_names_them(tmp_path):
    from mathpipe.data.pairs import read_pairs

    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"instruction": "1 + 1?", "chosen_response": "2"}])
    with pytest.raises(DataError, match="rejected_response"):
        read_pairs([path], "distilabel")
    write_jsonl(path, [{"prompt": [{"role": "user", "content": "q"}], "chosen": "a"}])
    with pytest.raises(DataError, match="rejected"):
        read_pairs([path], "trl")


def test_external_pair_schemas_become_chat_pairs(tmp_path):
    from mathpipe import prompts
    from mathpipe.data.pairs import read_pairs

    distilabel = tmp_path / "distilabel.jsonl"
    write_jsonl(distilabel, [{"instruction": "What is 6 * 7?", "chosen_response": "42", "rejected_response": "43",
                              "chosen_rating": 10, "rejected_rating": 2}])
    step = tmp_path / "step.jsonl"
    write_jsonl(step, [{"prompt": "What is 6 * 7?", "initial_reason_steps": "Step 1: ", "chosen": "6*7=42",
                        "rejected": "6*7=43", "full_chosen": "Step 1: 6*7=42", "full_rejected": "Step 1: 6*7=43",
                        "answer": "42", "dataset": "gsm8k"}])
    for path, fmt, chosen in ((distilabel, "distilabel", "42"), (step, "math_step_dpo", "Step 1: 6*7=42")):
        (pair,) = read_pairs([path], fmt)
        assert pair["prompt"] == prompts.messages("What is 6 * 7?")
        # in the form of the SFT records: the solution as the reasoning, its answer boxed
        assert pair["chosen"] == [{"role": "assistant", "content": prompts.response(chosen, "42")}]
        assert pair["rejected"][0]["role"] == "assistant" and "\\boxed{43}" in pair["rejected"][0]["content"]
        (plain,) = read_pairs([path], fmt, thinking=False)  # non-thinking: the solution as it is
        assert plain["chosen"] == [{"role": "assistant", "content": chosen}]
