"""Rejection sampling (mathpipe.training.rejection_sampling): metrics, selection rules, pairs, outputs and bad input.

The policy is scripted (known completions, some correct) so the selection can be checked exactly;
the reward model is a real sequence-classification checkpoint scoring those texts.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe.data.problems import read_problems
from mathpipe.errors import ConfigError, DataError, PipelineError
from mathpipe.generation import Completion
from mathpipe.io import read_jsonl, write_jsonl
from mathpipe.training import rejection_sampling
from mathpipe.training.base_model import build_base_model
from mathpipe.training.rejection_sampling import (
    RejectionConfig,
    roc_auc,
    run_rejection_sampling,
    select,
    summarise,
    write_outputs,
)
from tests.conftest import TINY, tiny_base_config
from tests.params import param_config

# --- AUC ------------------------------------------------------------------------------------------------


def test_roc_auc_known_values():
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half
    assert roc_auc([0.3, 0.7, 0.5], [True, True, False]) == 0.5
    assert roc_auc([1.0, 2.0], [True, True]) is None  # one class only


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=1, max_size=30))
def test_roc_auc_equals_the_pairwise_definition(data):
    scores = [float(s) for s, _ in data]
    labels = [y for _, y in data]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    expected = None if not pos or not neg else sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))
    got = roc_auc(scores, labels)
    assert got == pytest.approx(expected) if expected is not None else got is None


# --- selection and metrics ------------------------------------------------------------------------------


def sample(text: str, correct: bool, reward: float, unfinished: str | None = None) -> dict:
    return {"text": text, "correct": correct, "reward": reward, "extracted": "1", "num_tokens": 10,
            "finish_reason": "length" if unfinished == "length" else "stop", "unfinished": unfinished}


GROUP = [sample("a", False, 3.0), sample("b", True, 1.0), sample("c", True, 2.0), sample("d", False, -1.0),
         sample("e", False, 0.5)]


def test_selection_rules():
    assert select(GROUP, "verified_reward", None)["text"] == "c"  # best reward among the correct ones
    assert select(GROUP, "reward", None)["text"] == "a"  # best reward, right or wrong
    assert select(GROUP, "verifier", None)["text"] == "b"  # the first correct one
    assert select(GROUP, "verified_reward", 2.5) is None  # below the threshold
    assert select([sample("x", False, 1.0)], "verified_reward", None) is None


def test_an_unfinished_sample_is_never_chosen_nor_rejected():
    """A cut-off text teaches DPO and the reward model about length, not correctness."""
    group = [sample("cut", False, 9.0, "length"), sample("open", False, -9.0, "open_thinking"),
             sample("right", True, 1.0), sample("wrong", False, 0.0)]
    for rule in ("verified_reward", "reward", "verifier"):
        assert select(group, rule, None)["text"] == "right", rule
    assert [s["text"] for s in rejection_sampling.rejected_for(group, select(group, "reward", None), 3)] == ["wrong"]
    assert select([sample("cut", False, 9.0, "length")], "reward", None) is None
    assert summarise([group], kept=1, pairs=1)["truncated_rate"] == 2 / 4


def test_rejected_samples_are_the_lowest_reward_incorrect_ones():
    chosen = select(GROUP, "verified_reward", None)
    assert [s["text"] for s in rejection_sampling.rejected_for(GROUP, chosen, 2)] == ["d", "e"]
    duplicates = [sample("c", False, -5.0), sample("d", False, -1.0), sample("d", False, -0.5)]
    assert [s["text"] for s in rejection_sampling.rejected_for(duplicates, chosen, 3)] == ["d"]


def test_summary_metrics():
    groups = [GROUP, [sample("f", True, 0.0), sample("g", True, 1.0)], [sample("h", False, 0.0), sample("i", False, 1.0)]]
    m = summarise(groups, kept=2, pairs=3)
    assert m["prompts"] == 3 and m["samples"] == 9
    assert m["pass_at_1"] == pytest.approx(4 / 9)
    assert m["pass_at_n"] == pytest.approx(2 / 3)
    # top-reward samples: "a" (wrong), "g" (right), "i" (wrong)
    assert m["reward_selected_accuracy"] == pytest.approx(1 / 3)
    assert m["prompts_with_mixed_verdicts"] == 1
    assert m["reward_auc_within_prompt"] == pytest.approx(roc_auc([3.0, 1.0, 2.0, -1.0, 0.5], [False, True, True, False, False]))


# --- the stage on a scripted policy and a real reward model ---------------------------------------------


class ScriptedPolicy:
    """Answers every prompt with the same n texts: two correct (\\boxed{gold}), the rest wrong."""

    name = "scripted"
    max_length = 1024

    def __init__(self, tokenizer, golds: dict[str, str]):
        self.tokenizer, self.golds, self.closed = tokenizer, golds, False

    def generate(self, rendered, s):
        out = []
        for text in rendered:
            gold = next(g for q, g in self.golds.items() if q in text)
            texts = [f"<think>\nso {gold}\n</think>\n\nThe answer is \\boxed{{{gold}}}.",
                     f"<think>\nhence {gold}\n</think>\n\n\\boxed{{{gold}}}"]
            texts += [f"<think>\nmaybe {int(gold) + k}\n</think>\n\n\\boxed{{{int(gold) + k}}}" for k in range(1, s.n - 1)]
            out.append([Completion(t, 5, "stop") for t in texts[: s.n]])
        return out

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, sample_dir):
    """A reward model with its own tokenizer (vocabulary 300, not the policy's 400): scoring is by text."""
    from transformers import AutoModelForSequenceClassification

    base = tmp_path_factory.mktemp("rm") / "base"
    build_base_model(tiny_base_config(base, sample_dir, tiny=TINY.__class__(**{**TINY.__dict__, "vocab_size": 300})))
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = 0
    out = base.parent / "reward"
    model.save_pretrained(out)
    for f in base.iterdir():
        if "token" in f.name or f.name == "chat_template.jinja":
            (out / f.name).write_bytes(f.read_bytes())
    return out


@pytest.fixture
def prompt_rows(sample_dir):
    rows = [json.loads(line) for line in (sample_dir / "gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{"id": f"q{i}", "problem": r["question"], "answer": r["answer"].split("####")[-1].strip()}
            for i, r in enumerate(rows[:10])]


@pytest.fixture
def make_config(tmp_path, prompt_rows, tiny_model_dir, reward_dir):
    write_jsonl(tmp_path / "prompts.jsonl", prompt_rows)

    def make(**overrides) -> RejectionConfig:
        raw = {"policy": str(tiny_model_dir), "reward_model": str(reward_dir),
               "prompts_file": str(tmp_path / "prompts.jsonl"), "out_dir": str(tmp_path / "out"),
               "val_fraction": 0.2, "generation": {"n": 5, "temperature": 1.0}, **overrides}
        return param_config(RejectionConfig, "rejection_sampling", **raw)

    return make


@pytest.fixture
def scripted(monkeypatch, prompt_rows, tiny_tokenizer):
    policy = ScriptedPolicy(tiny_tokenizer, {r["problem"]: r["answer"] for r in prompt_rows})
    monkeypatch.setattr(rejection_sampling, "make_generator", lambda path, engine: policy)
    return policy


def test_run_selects_verified_samples_and_builds_pairs(make_config, scripted, tmp_path):
    cfg = make_config(pairs_per_prompt=2)
    result = run_rejection_sampling(cfg)
    assert scripted.closed  # the engine is released before the reward model loads
    m = result.metrics
    assert m["prompts"] == 10 and m["samples"] == 50 and m["samples_per_prompt"] == 5
    assert m["pass_at_1"] == pytest.approx(0.4) and m["pass_at_n"] == 1.0
    assert m["prompts_kept"] == 10 and m["pairs"] == 20 and m["pairs_val"] == 4  # 2 of 10 prompts held out
    assert all(isinstance(s["reward"], float) for s in result.samples)
    for record in result.best:
        assert record["source"] == "rejection_sampling" and record["messages"][0]["role"] == "user"
        assert f"\\boxed{{{record['answer']}}}" in record["output"]  # only verified samples are kept
    for pair in result.pairs_train + result.pairs_val:
        assert pair["chosen"][0]["content"] != pair["rejected"][0]["content"]
        assert pair["chosen_reward"] >= max(s["reward"] for s in result.samples
                                            if s["id"] == pair["id"] and s["correct"]) - 1e-9
    write_outputs(result, cfg.out_dir)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["best.jsonl", "pairs_train.jsonl", "pairs_val.jsonl",
                                                      "samples.jsonl"]
    assert len(read_jsonl(out / "samples.jsonl")) == 50
    assert sum(s["selected"] for s in read_jsonl(out / "samples.jsonl")) == 10
    from mathpipe.data.pairs import read_pairs

    assert len(read_pairs([out / "pairs_train.jsonl"], "trl")) == 16  # what DPO reads


def test_same_reward_model_scores_are_reproducible(make_config, scripted):
    a = run_rejection_sampling(make_config())
    b = run_rejection_sampling(make_config())
    assert [s["reward"] for s in a.samples] == [s["reward"] for s in b.samples]


def test_no_pair_left_is_one_clear_error(make_config, scripted):
    with pytest.raises(DataError, match="built no training pair"):
        run_rejection_sampling(make_config(selection={"min_reward": 1e9}))


def test_bad_input_fails_before_the_engine_starts(make_config, monkeypatch, tmp_path):
    def no_engine(*args):
        raise AssertionError("the engine must not start")

    monkeypatch.setattr(rejection_sampling, "make_generator", no_engine)
    with pytest.raises(PipelineError, match="model not found: .*nope"):
        run_rejection_sampling(make_config(reward_model=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="missing.jsonl"):
        run_rejection_sampling(make_config(prompts_file=str(tmp_path / "missing.jsonl")))
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no prompts to sample from"):
        run_rejection_sampling(make_config(prompts_file=str(tmp_path / "empty.jsonl")))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "1", "question": "q"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: missing field"):
        run_rejection_sampling(make_config(prompts_file=str(tmp_path / "bad.jsonl")))


@pytest.mark.parametrize("overrides, key", [
    ({"generation": {"n": 1, "temperature": 1.0}}, "rejection_sampling.generation.n"),
    ({"pairs_per_prompt": 0}, "rejection_sampling.pairs_per_prompt"),
    ({"max_prompts": 0}, "rejection_sampling.max_prompts"),
    ({"selection": {"rule": "best"}}, "rejection_sampling.selection.rule"),
    ({"engine": {"backend": "tgi"}}, "rejection_sampling.engine.backend"),
])
def test_bad_parameters_are_named(make_config, overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        make_config(**overrides)


def test_max_prompts_takes_a_seeded_subset(make_config):
    cfg = make_config(max_prompts=4)
    a = read_problems(cfg.prompts_file, 4, seed=0)
    assert len(a) == 4 and a == read_problems(cfg.prompts_file, 4, seed=0)
    assert a != read_problems(cfg.prompts_file, 4, seed=1)
    ids = [r["id"] for r in read_problems(cfg.prompts_file)]
    assert [r["id"] for r in a] == [i for i in ids if i in {r["id"] for r in a}]  # file order kept
