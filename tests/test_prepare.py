"""prepare (mathpipe.data.prepare, stages.prepare) on the small sample data: outputs and their
schemas, filters, dedup, split, determinism, and bad inputs that stop with a clear message and leave
no output behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import SMALL_SAMPLE

from mathpipe import prompts
from mathpipe.answers import extract_answer, extract_gold, is_equivalent
from mathpipe.config import load_section
from mathpipe.data import readers
from mathpipe.data.prepare import (
    FILTER_ORDER,
    PrepareConfig,
    TokenCounter,
    is_validation,
    normalise_problem,
    resolve_inputs,
    run_prepare,
)
from mathpipe.errors import ConfigError, DataError, PipelineError
from mathpipe.models import load_tokenizer
from tests.params import params_with

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FILES = [
    "eval/cmath.jsonl",
    "eval/gsm8k.jsonl",
    "eval/math.jsonl",
    "pairs_train.jsonl",
    "pairs_val.jsonl",
    "sft_train.jsonl",
    "sft_val.jsonl",
]
SFT_KEYS = {"id", "source", "problem", "answer", "messages", "instruction", "input", "output"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def all_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def prepare(cfg: PrepareConfig) -> dict:
    """What `stages.prepare` does, minus the metrics file."""
    inputs = resolve_inputs(cfg)
    return run_prepare(cfg, load_tokenizer(cfg.tokenizer), inputs)


def openr1_rows(raw: Path) -> dict[str, dict]:
    return {r["uuid"]: r for p in sorted((raw / "openr1").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists()
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]
    assert leftovers == [], leftovers


def shard(raw: Path, index: int = 1) -> Path:
    return sorted((raw / "openr1").glob("*.parquet"))[index]


def rewrite_shard(path: Path, edit) -> None:
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, prepare_config):
    out = tmp_path_factory.mktemp("prepare") / "prepared"
    cfg = prepare_config(out)
    summary = prepare(cfg)
    files = {name: read_jsonl(out / name) for name in OUTPUT_FILES}
    return cfg, summary, out, files


# --- outputs and schemas -------------------------------------------------------------------------


def test_output_files(prepared):
    _, summary, out, files = prepared
    assert sorted(all_bytes(out)) == OUTPUT_FILES
    assert [p.name for p in out.parent.iterdir()] == ["prepared"]  # no temporary folder left
    assert {k: len(files[f"sft_{k}.jsonl"]) for k in ("train", "val")} == summary["sft"]
    assert {k: len(files[f"pairs_{k}.jsonl"]) for k in ("train", "val")} == {
        k: summary["pairs"][k] for k in ("train", "val")
    }
    assert summary["eval"] == {"gsm8k": SMALL_SAMPLE.n_gsm8k_test, "cmath": SMALL_SAMPLE.n_cmath_test,
                               "math": SMALL_SAMPLE.n_math_test}
    assert summary["sft"]["train"] > 100 and summary["sft"]["val"] > 0
    assert summary["pairs"]["train"] > 30  # the sample has wrong traces next to right ones


def test_sft_rows_hold_chat_messages_and_alpaca_columns(prepared, sample_dir):
    _, _, _, files = prepared
    raw = openr1_rows(sample_dir)
    for split in ("train", "val"):
        for row in files[f"sft_{split}.jsonl"]:
            assert set(row) == SFT_KEYS
            assert row["source"] == "openr1"
            assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
            user, assistant = (m["content"] for m in row["messages"])
            assert user == prompts.user_message(row["problem"]) == f"{row['problem']}\n{prompts.instruction()}"
            assert row["instruction"] == prompts.instruction("boxed")
            assert row["input"] == row["problem"]
            assert row["output"] == assistant
            source = raw[row["id"]]
            assert row["problem"] == source["problem"] and row["answer"] == source["answer"]
            # trace: generation -> a complete R1 trace of this very problem that a judge calls correct
            i = source["generations"].index(assistant)
            judges = (source["correctness_math_verify"], source["correctness_llama"] or [None] * (i + 1))
            assert any(j[i] for j in judges) and source["is_reasoning_complete"][i]
            assert re.fullmatch(r"<think>\n.+\n</think>\n\n.*\d+.*", assistant, re.S), assistant
            assert is_equivalent(extract_answer(assistant), row["answer"])


def test_pairs_are_conversational_and_verified(prepared):
    _, _, _, files = prepared
    for split in ("train", "val"):
        sft_ids = {r["id"] for r in files[f"sft_{split}.jsonl"]}
        for pair in files[f"pairs_{split}.jsonl"]:
            assert set(pair) == {"id", "answer", "prompt", "chosen", "rejected"}
            assert pair["id"].split("#")[0] in sft_ids  # a pair stays in the split of its problem
            assert [m["role"] for m in pair["prompt"]] == ["user"]
            assert pair["prompt"][0]["content"].endswith(prompts.instruction())
            assert [m["role"] for m in pair["chosen"]] == [m["role"] for m in pair["rejected"]] == ["assistant"]
            chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
            assert chosen != rejected
            assert prompts.THINK_CLOSE in chosen and prompts.THINK_CLOSE in rejected
            assert is_equivalent(extract_answer(chosen), pair["answer"])
            assert not is_equivalent(extract_answer(rejected), pair["answer"])


def test_thinking_off_keeps_what_follows_the_thinking(prepared, prepare_config, tmp_path):
    """prompt.chat_template_kwargs {enable_thinking: false}: the same problems, each target and
    rejected trace without its thinking block (what a non-thinking model answers), still verified."""
    _, _, _, files = prepared
    cfg = prepare_config(tmp_path / "plain")
    plain = run_prepare(cfg, load_tokenizer(cfg.tokenizer), resolve_inputs(cfg), {"enable_thinking": False})
    rows = read_jsonl(tmp_path / "plain" / "sft_train.jsonl")
    assert plain["sft"]["train"] == len(rows)
    # shorter targets: every problem kept with thinking still fits, and each target is the visible
    # part of one of that problem's traces
    assert {r["id"] for r in files["sft_train.jsonl"]} <= {r["id"] for r in rows}
    traces = openr1_rows(Path(cfg.raw_dir))
    for row in rows:
        answer = row["messages"][-1]["content"]
        assert prompts.THINK_OPEN not in answer and prompts.THINK_CLOSE not in answer
        assert answer in [prompts.without_thinking(g) for g in traces[row["id"]]["generations"]]
        assert is_equivalent(extract_answer(answer), row["answer"])
    for pair in read_jsonl(tmp_path / "plain" / "pairs_train.jsonl"):
        for side in ("chosen", "rejected"):
            assert prompts.THINK_CLOSE not in pair[side][0]["content"]
        assert not is_equivalent(extract_answer(pair["rejected"][0]["content"]), pair["answer"])


def test_pairs_per_problem_pairs_every_wrong_trace_once(prepared, prepare_config, sample_dir, tmp_path):
    _, summary, _, files = prepared
    more = prepare(prepare_config(tmp_path / "p", pairs_per_problem=3))
    rows = openr1_rows(sample_dir)
    for split in ("train", "val"):
        pairs = read_jsonl(tmp_path / f"p/pairs_{split}.jsonl")
        assert len({p["id"] for p in pairs}) == len(pairs) == more["pairs"][split]
        by_problem: dict[str, list[dict]] = {}
        for pair in pairs:
            by_problem.setdefault(pair["id"].split("#")[0], []).append(pair)
        # the first pair of a problem is the one of the default (pairs_per_problem: 1)
        assert [group[0] for group in by_problem.values()] == files[f"pairs_{split}.jsonl"]
        for uuid, group in by_problem.items():
            r = rows[uuid]
            llama = r["correctness_llama"] or [None] * len(r["generations"])
            wrong = [g for g, ok, judge, done in zip(r["generations"], r["correctness_math_verify"], llama,
                                                     r["is_reasoning_complete"]) if ok is False and not judge and done]
            assert [p["rejected"][0]["content"] for p in group] == wrong[:3]
    assert more["pairs"]["kept"] > summary["pairs"]["kept"]
    assert more["sft"] == summary["sft"]  # the SFT records do not change


def test_eval_sets_keep_the_questions_and_their_gold(prepared, sample_dir):
    _, _, _, files = prepared
    for name, gold_field in (("gsm8k", "answer"), ("cmath", "golden")):
        source = read_jsonl(sample_dir / name / "test.jsonl")
        rows = files[f"eval/{name}.jsonl"]
        assert [r["question"] for r in rows] == [s["question"] for s in source]
        assert [r["id"] for r in rows] == [f"{name}-test-{i}" for i in range(len(source))]
        for row, s in zip(rows, source):
            assert set(row) == {"id", "question", "gold", "reference"}
            assert row["reference"] == s[gold_field]
            assert row["gold"] == extract_gold(s[gold_field], name) and re.fullmatch(r"\d+", row["gold"])


def test_no_problem_twice_and_split_is_the_hash_of_the_problem(prepared, sample_dir):
    cfg, summary, _, files = prepared
    train, val = files["sft_train.jsonl"], files["sft_val.jsonl"]
    problems = [normalise_problem(r["problem"]) for r in train + val]
    assert len(problems) == len(set(problems))
    assert len({r["id"] for r in train + val}) == len(train) + len(val)
    raw_problems = [r["problem"] for r in openr1_rows(sample_dir).values()]
    assert len(set(raw_problems)) < len(raw_problems)  # the sample does repeat some problems ...
    counts = summary["openr1"]
    assert counts["after_duplicate"] == len(train) + len(val) < counts["after_max_tokens"]  # ... and are dropped
    for split, rows in (("train", train), ("val", val)):
        for r in rows:
            assert is_validation(r["problem"], cfg.val_fraction, cfg.split_seed) == (split == "val")


def test_counts_are_monotone_and_add_up(prepared):
    _, summary, _, _ = prepared
    counts = summary["openr1"]
    assert list(counts) == ["read"] + [f"after_{name}" for name in FILTER_ORDER]
    values = list(counts.values())
    assert values[0] == SMALL_SAMPLE.n_train
    assert all(a >= b for a, b in zip(values, values[1:])), counts
    assert summary["sft"]["train"] + summary["sft"]["val"] == counts["after_duplicate"]
    pairs = summary["pairs"]
    assert pairs["kept"] == pairs["train"] + pairs["val"] == pairs["candidates"] - pairs["dropped_max_tokens"]
    assert "gsm8k_train" not in summary  # not an SFT source by default


def test_two_runs_are_byte_identical(prepared, prepare_config, tmp_path):
    _, _, out, _ = prepared
    again = tmp_path / "again"
    prepare(prepare_config(again))
    assert all_bytes(again) == all_bytes(out)


def test_split_seed_and_fraction_change_the_split_only(prepared, prepare_config, tmp_path):
    _, _, _, files = prepared
    summary = prepare(prepare_config(tmp_path / "p", split_seed=1, val_fraction=0.3))
    train, val = read_jsonl(tmp_path / "p/sft_train.jsonl"), read_jsonl(tmp_path / "p/sft_val.jsonl")
    before = {r["id"] for r in files["sft_train.jsonl"] + files["sft_val.jsonl"]}
    assert {r["id"] for r in train + val} == before  # the same records, split differently
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    assert 0.15 < len(val) / len(before) < 0.45
    assert {r["id"] for r in val} != {r["id"] for r in files["sft_val.jsonl"]}
    assert summary["sft"] == {"train": len(train), "val": len(val)}
    assert all(is_validation(r["problem"], 0.3, 1) for r in val)


def test_trace_solution_uses_the_reference_solution(prepared, prepare_config, sample_dir, tmp_path):
    _, _, _, files = prepared
    prepare(prepare_config(tmp_path / "p", trace="solution"))
    raw = openr1_rows(sample_dir)
    rows = read_jsonl(tmp_path / "p/sft_train.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in files["sft_train.jsonl"]]
    for r in rows:
        expected = prompts.response(raw[r["id"]]["solution"], r["answer"])
        assert r["output"] == r["messages"][1]["content"] == expected
        assert r["output"] not in raw[r["id"]]["generations"]
        assert r["output"].endswith(f"The answer is \\boxed{{{r['answer']}}}.")


def test_gsm8k_as_an_sft_source(prepared, prepare_config, sample_dir, tmp_path):
    _, base_summary, _, files = prepared
    summary = prepare(prepare_config(tmp_path / "p", sft_sources=["openr1", "gsm8k"]))
    splits = {k: read_jsonl(tmp_path / f"p/sft_{k}.jsonl") for k in ("train", "val")}
    for k, rows in splits.items():  # the OpenR1 records are unchanged, the GSM8K ones come after them
        assert [r for r in rows if r["source"] == "openr1"] == files[f"sft_{k}.jsonl"]
        assert [r["source"] for r in rows] == sorted(r["source"] for r in rows)[::-1]
    assert summary["openr1"] == base_summary["openr1"]
    rows = splits["train"] + splits["val"]
    gsm = [r for r in rows if r["source"] == "gsm8k"]
    source = read_jsonl(sample_dir / "gsm8k/train.jsonl")
    assert summary["gsm8k_train"]["read"] == len(source) == SMALL_SAMPLE.n_gsm8k_train
    assert len(gsm) == summary["gsm8k_train"]["after_duplicate"] == len(source)
    by_question = {s["question"]: s for s in source}
    for r in gsm:
        assert re.fullmatch(r"gsm8k-train-\d+", r["id"])
        s = by_question[r["problem"]]
        body, final = s["answer"].rsplit("####", 1)
        assert "<<" in body  # the raw answers carry calculator annotations ...
        assert "<<" not in r["output"] and ">>" not in r["output"]  # ... the targets do not
        assert r["answer"] == final.strip()
        assert r["output"] == prompts.response(re.sub(r"<<[^<>]*>>", "", body), final.strip())
        assert is_equivalent(extract_answer(r["output"]), r["answer"])
    total = sum(summary[s]["after_duplicate"] for s in ("openr1", "gsm8k_train"))
    assert summary["sft"]["train"] + summary["sft"]["val"] == total


def test_gsm8k_only(prepare_config, tmp_path):
    summary = prepare(prepare_config(tmp_path / "p", sft_sources=["gsm8k"]))
    assert "openr1" not in summary and summary["gsm8k_train"]["read"] == SMALL_SAMPLE.n_gsm8k_train
    rows = read_jsonl(tmp_path / "p/sft_train.jsonl")
    assert rows and {r["source"] for r in rows} == {"gsm8k"}
    assert read_jsonl(tmp_path / "p/pairs_train.jsonl") == []  # GSM8K has no wrong traces to pair


def test_max_train_rows_caps_the_training_split(prepared, prepare_config, tmp_path):
    _, _, _, files = prepared
    summary = prepare(prepare_config(tmp_path / "p", max_train_rows=50))
    train = read_jsonl(tmp_path / "p/sft_train.jsonl")
    assert len(train) == summary["sft"]["train"] == 50
    assert train == files["sft_train.jsonl"][:50]  # the first rows, in input order
    pair_ids = {p["id"] for p in read_jsonl(tmp_path / "p/pairs_train.jsonl")}
    assert pair_ids <= {r["id"] for r in train}


def test_max_tokens_filters_long_rows(prepared, prepare_config, tiny_tokenizer, tmp_path):
    _, summary, _, files = prepared
    rows = files["sft_train.jsonl"] + files["sft_val.jsonl"]
    lengths = sorted(
        len(tiny_tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
        for r in rows
    )
    limit = lengths[len(lengths) // 2]
    small = prepare(prepare_config(tmp_path / "p", filters={"max_tokens": limit}))
    kept = read_jsonl(tmp_path / "p/sft_train.jsonl") + read_jsonl(tmp_path / "p/sft_val.jsonl")
    assert small["openr1"]["after_max_tokens"] == len(kept) == sum(n <= limit for n in lengths)
    assert small["openr1"]["after_finish_stop"] == summary["openr1"]["after_finish_stop"]
    for r in kept:
        n = len(tiny_tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
        assert n <= limit
    assert small["pairs"]["dropped_max_tokens"] > 0


def test_max_prompt_tokens_drops_problems_whose_prompt_alone_is_longer(prepared, prepare_config, tiny_tokenizer,
                                                                      tmp_path):
    """What bounds the pairs rejection sampling builds on a problem: its prompt + up to max_new_tokens."""
    _, summary, _, files = prepared
    count = TokenCounter(tiny_tokenizer)
    prompts_of = lambda rows: [r["messages"][:-1] for r in rows]  # noqa: E731  the turns before the answer
    lengths = sorted(count(prompts_of(files["sft_train.jsonl"] + files["sft_val.jsonl"])))
    limit = lengths[len(lengths) // 2]
    small = prepare(prepare_config(tmp_path / "p", filters={"max_prompt_tokens": limit}))
    kept = read_jsonl(tmp_path / "p/sft_train.jsonl") + read_jsonl(tmp_path / "p/sft_val.jsonl")
    assert kept and max(count(prompts_of(kept))) <= limit
    counts = small["openr1"]
    assert counts["after_contaminated"] == summary["openr1"]["after_contaminated"]
    assert counts["after_prompt_tokens"] < counts["after_contaminated"]  # dropped, and counted
    assert summary["openr1"]["after_prompt_tokens"] == summary["openr1"]["after_contaminated"]  # 256: none dropped
    with pytest.raises(ConfigError, match=r"prepare.filters.max_prompt_tokens: must be null or an integer > 0"):
        prepare_config(tmp_path / "q", filters={"max_prompt_tokens": 0})


def test_filters_off_take_any_trace(prepared, prepare_config, sample_dir, tmp_path):
    _, summary, _, _ = prepared
    loose = prepare(prepare_config(tmp_path / "p", filters={"min_correctness_count": 0,
                                                               "correct_by": "none",
                                                               "require_complete": False,
                                                               "require_finish_stop": False,
                                                               "max_tokens": 100000}))
    counts = loose["openr1"]
    assert counts["after_max_tokens"] == counts["read"]
    raw = openr1_rows(sample_dir)
    rows = read_jsonl(tmp_path / "p/sft_train.jsonl") + read_jsonl(tmp_path / "p/sft_val.jsonl")
    assert all(r["output"] in raw[r["id"]]["generations"] for r in rows)
    wrong = [r for r in rows if not raw[r["id"]]["correctness_math_verify"][0]]
    assert len(wrong) > 20  # without the verifier filter, wrong and truncated traces become targets
    assert any(prompts.THINK_CLOSE not in r["output"] for r in wrong)


# --- which trace, judged by whom ---------------------------------------------------------------


def write_openr1(raw: Path, rows: list[dict]) -> None:
    """Replace the OpenR1 shards of a sample copy with one shard of `rows` (the other columns filled)."""
    from mathpipe.data.schemas import OPENR1_SCHEMA

    for path in (raw / "openr1").glob("*.parquet"):
        path.unlink()
    full = [{"solution": "", "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads",
             "messages": [], "correctness_llama": None, "finish_reasons": None, **r,
             "is_reasoning_complete": [True] * len(r["generations"]),
             "correctness_count": sum(map(bool, r["correctness_math_verify"]))} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=OPENR1_SCHEMA), raw / "openr1/train-00000-of-00001.parquet")


def trace(steps: int, answer: int) -> str:
    return "<think>\n" + "Let me check it again.\n" * steps + f"</think>\n\nThe answer is \\boxed{{{answer}}}."


def test_the_shortest_correct_trace_that_fits_is_the_target(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    long_, short, shorter, wrong = trace(80, 7), trace(6, 7), trace(2, 7), trace(1, 8)
    write_openr1(raw, [
        {"problem": "A long first trace", "answer": "7", "uuid": "a", "generations": [long_, short],
         "correctness_math_verify": [True, True]},
        {"problem": "Three correct traces", "answer": "7", "uuid": "b", "generations": [short, wrong, shorter, long_],
         "correctness_math_verify": [True, False, True, True]},
    ])
    summary = prepare(prepare_config(tmp_path / "p", raw, val_fraction=0.0, filters={"max_tokens": 200}))
    rows = {r["id"]: r for r in read_jsonl(tmp_path / "p/sft_train.jsonl")}
    assert rows["a"]["output"] == short  # the first trace is too long: the problem is kept, not dropped
    assert rows["b"]["output"] == shorter
    pair, = read_jsonl(tmp_path / "p/pairs_train.jsonl")
    assert pair["chosen"][0]["content"] == shorter and pair["rejected"][0]["content"] == wrong
    assert summary["openr1"]["after_max_tokens"] == 2


def test_a_copy_dropped_by_a_filter_does_not_hide_a_usable_duplicate(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    write_openr1(raw, [
        {"problem": "Twice  asked", "answer": "7", "uuid": "first", "generations": [trace(1, 8)],
         "correctness_math_verify": [False]},
        {"problem": "Twice asked", "answer": "7", "uuid": "second", "generations": [trace(1, 7)],
         "correctness_math_verify": [True]},
        {"problem": "Twice asked ", "answer": "7", "uuid": "third", "generations": [trace(2, 7)],
         "correctness_math_verify": [True]},
    ])
    summary = prepare(prepare_config(tmp_path / "p", raw, val_fraction=0.0, filters={"min_correctness_count": 0}))
    assert [r["id"] for r in read_jsonl(tmp_path / "p/sft_train.jsonl")] == ["second"]
    counts = summary["openr1"]
    assert (counts["after_correct"], counts["after_max_tokens"], counts["after_duplicate"]) == (2, 2, 1)


@pytest.mark.parametrize(("rule", "kept"), [("any", {"mv", "llama", "both"}), ("math_verify", {"mv", "both"}),
                                            ("llama", {"llama", "both"}), ("all", {"mv", "both"})])
def test_correct_by_chooses_the_judges(prepare_config, copy_sample, tmp_path, rule, kept):
    raw = copy_sample()
    write_openr1(raw, [  # "mv": Math-Verify yes, no Llama verdict; "llama": only the judge says yes
        {"problem": "p mv", "answer": "7", "uuid": "mv", "generations": [trace(1, 7)],
         "correctness_math_verify": [True]},
        {"problem": "p llama", "answer": "7", "uuid": "llama", "generations": [trace(1, 7)],
         "correctness_math_verify": [False], "correctness_llama": [True]},
        {"problem": "p both", "answer": "7", "uuid": "both", "generations": [trace(1, 7)],
         "correctness_math_verify": [True], "correctness_llama": [True]},
        {"problem": "p disputed", "answer": "7", "uuid": "disputed", "generations": [trace(1, 7)],
         "correctness_math_verify": [True], "correctness_llama": [False]},
    ])
    summary = prepare(prepare_config(tmp_path / "p", raw, val_fraction=0.0, filters={"min_correctness_count": 0,
                                                                                     "correct_by": rule}))
    expected = kept | ({"disputed"} if rule in ("any", "math_verify") else set())
    assert {r["id"] for r in read_jsonl(tmp_path / "p/sft_train.jsonl")} == expected
    assert summary["openr1_traces"] == {"correct_by": rule, "read": 4, "correct_by_both": 1,
                                        "correct_by_math_verify_only": 2, "correct_by_llama_only": 1,
                                        "wrong_by_every_judge": 0, "no_verdict": 0}


def test_a_trace_only_one_judge_calls_wrong_is_never_rejected(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    right, unparsed, disputed, wrong = trace(1, 7), trace(2, 7), trace(3, 9), trace(4, 8)
    write_openr1(raw, [{"problem": "p", "answer": "7", "uuid": "p", "generations": [right, unparsed, disputed, wrong],
                        "correctness_math_verify": [True, False, False, False],
                        "correctness_llama": [True, True, None, False]}])
    prepare(prepare_config(tmp_path / "p", raw, val_fraction=0.0, pairs_per_problem=4))
    pairs = read_jsonl(tmp_path / "p/pairs_train.jsonl")
    # unparsed: the judge says right; disputed: no second verdict, Math-Verify alone says wrong -> rejected
    assert [p["rejected"][0]["content"] for p in pairs] == [disputed, wrong]


def test_the_sample_counts_llama_only_traces_as_correct_and_never_rejects_them(prepared, sample_dir):
    _, summary, _, files = prepared
    traces = summary["openr1_traces"]
    assert traces["correct_by"] == "any" and traces["correct_by_llama_only"] > 0
    raw = openr1_rows(sample_dir)
    llama_only = {g for r in raw.values() if r["correctness_llama"]
                  for g, mv, judge in zip(r["generations"], r["correctness_math_verify"], r["correctness_llama"])
                  if judge and not mv}
    rejected = {p["rejected"][0]["content"] for split in ("train", "val") for p in files[f"pairs_{split}.jsonl"]}
    targets = {r["output"] for split in ("train", "val") for r in files[f"sft_{split}.jsonl"]}
    assert not llama_only & rejected and llama_only & targets


# --- nullable columns ----------------------------------------------------------------------------


@pytest.mark.parametrize("null_type", ["typed", "inferred"])
def test_all_null_nullable_columns_are_fine(prepared, prepare_config, copy_sample, tmp_path, null_type):
    """finish_reasons / correctness_llama are null on every row of every shard: the SFT records of
    Math-Verify alone, because a null finish reason passes the finish filter and truncated traces are caught by
    `complete` too."""
    out = tmp_path / "math_verify_only"
    prepare(prepare_config(out, filters={"correct_by": "math_verify"}))
    raw = copy_sample()

    def nullify(table: pa.Table) -> pa.Table:
        for name in ("finish_reasons", "correctness_llama"):
            i = table.schema.get_field_index(name)
            kind = table.schema.field(name).type if null_type == "typed" else pa.null()
            table = table.set_column(i, name, pa.nulls(len(table), type=kind))
        return table

    for path in sorted((raw / "openr1").glob("*.parquet")):
        rewrite_shard(path, nullify)
        assert pq.read_table(path).column("finish_reasons").null_count == pq.read_metadata(path).num_rows
    prepare(prepare_config(tmp_path / "p", raw_dir=raw))
    # The pairs differ: without the judge's verdict, a right answer Math-Verify missed may be rejected.
    same = lambda files: {k: v for k, v in files.items() if not k.startswith("pairs_")}  # noqa: E731
    assert same(all_bytes(tmp_path / "p")) == same(all_bytes(out))


# --- inputs: paths ---------------------------------------------------------------------------------


def test_expand_paths_reads_each_shard_once(sample_dir):
    shards = sorted((sample_dir / "openr1").glob("*.parquet"))
    assert len(shards) == SMALL_SAMPLE.shards
    patterns = ["openr1", "openr1/*.parquet", "./openr1/train-00000-*.parquet", "openr1/../openr1"]
    found = readers.expand_paths(patterns, sample_dir)
    assert [p.resolve() for p in found] == [p.resolve() for p in shards]
    assert readers.expand_paths("openr1/train-00001-*.parquet", sample_dir) == [shards[1]]
    assert readers.expand_paths(str(sample_dir / "gsm8k" / "*.jsonl")) == sorted(
        (sample_dir / "gsm8k").glob("*.jsonl")
    )


def test_expand_paths_pattern_matching_nothing_is_named(sample_dir):
    with pytest.raises(DataError, match=re.escape(f"no input file matches {sample_dir / 'openr1/*.arrow'}")):
        readers.expand_paths(["openr1", "openr1/*.arrow"], sample_dir)
    with pytest.raises(DataError, match=re.escape(str(sample_dir / "gsm8k"))):  # a folder without parquet
        readers.expand_paths("gsm8k", sample_dir)


def test_overlapping_patterns_do_not_double_the_rows(prepared, prepare_config, tmp_path):
    _, _, out, _ = prepared
    prepare(prepare_config(tmp_path / "p", files={"openr1": ["openr1", "openr1/*.parquet"]}))
    assert all_bytes(tmp_path / "p") == all_bytes(out)


# --- bad inputs: a clear message, and no output at all ----------------------------------------------


@pytest.mark.parametrize("name", ["openr1", "gsm8k_test", "cmath_test"])
def test_missing_input_file(prepare_config, tmp_path, sample_dir, name):
    out = tmp_path / "p"
    cfg = prepare_config(out, files={name: "nowhere/missing.*"})
    with pytest.raises(DataError, match=re.escape(str(sample_dir / "nowhere/missing.*"))):
        prepare(cfg)
    assert_nothing_written(out)


def test_gsm8k_source_needs_its_file(prepare_config, tmp_path):
    cfg = prepare_config(tmp_path / "p", sft_sources=["gsm8k"], files={"gsm8k_train": None})
    with pytest.raises(DataError, match=r"prepare\.files\.gsm8k_train"):
        prepare(cfg)
    assert_nothing_written(tmp_path / "p")


def test_shard_missing_a_required_column(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    bad = shard(raw, 1)
    rewrite_shard(bad, lambda t: t.drop_columns(["correctness_count"]))
    out = tmp_path / "p"
    with pytest.raises(DataError, match=re.escape(f"{bad}: missing required column 'correctness_count'")):
        prepare(prepare_config(out, raw_dir=raw))
    assert_nothing_written(out)


def test_shard_with_a_wrong_column_type(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    bad = shard(raw, 1)

    def as_string(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index("correctness_count")
        return table.set_column(i, "correctness_count", table.column(i).cast(pa.string()))

    rewrite_shard(bad, as_string)
    out = tmp_path / "p"
    with pytest.raises(DataError, match=re.escape(f"{bad}: column 'correctness_count' has type string, expected int64")):
        prepare(prepare_config(out, raw_dir=raw))
    assert_nothing_written(out)


def test_a_file_that_is_not_parquet(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    bad = shard(raw, 0)
    bad.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=re.escape(f"{bad}: not a readable parquet file")):
        prepare(prepare_config(tmp_path / "p", raw_dir=raw))
    assert_nothing_written(tmp_path / "p")


@pytest.mark.parametrize("name", ["gsm8k", "cmath"])
def test_malformed_jsonl_line_in_an_eval_file(prepare_config, copy_sample, tmp_path, name):
    raw = copy_sample()
    path = raw / name / "test.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(4, '{"question": "cut off", \n')
    path.write_text("".join(lines), encoding="utf-8")
    out = tmp_path / "p"
    with pytest.raises(DataError, match=re.escape(f"{path}:5: malformed JSON line")):
        prepare(prepare_config(out, raw_dir=raw))
    assert_nothing_written(out)


def test_eval_row_missing_a_field(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    path = raw / "cmath" / "test.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"question": "no gold here"}, ensure_ascii=False) + "\n")
    with pytest.raises(DataError, match=re.escape(f"{path}:{SMALL_SAMPLE.n_cmath_test + 1}: missing field(s) 'golden'")):
        prepare(prepare_config(tmp_path / "p", raw_dir=raw))
    assert_nothing_written(tmp_path / "p")


def test_every_row_filtered_out(prepare_config, tmp_path):
    out = tmp_path / "p"
    with pytest.raises(DataError, match=r"no SFT training rows left after the filters.*prepare\.filters") as info:
        prepare(prepare_config(out, filters={"max_tokens": 5}))
    assert "'after_max_tokens': 0" in str(info.value)  # the counts show where the rows went
    assert_nothing_written(out)


def test_a_failed_run_keeps_the_previous_output(prepared, prepare_config, copy_sample, tmp_path):
    _, _, out, _ = prepared
    target = tmp_path / "p"
    prepare(prepare_config(target))
    before = all_bytes(target)
    with pytest.raises(DataError):
        prepare(prepare_config(target, filters={"max_tokens": 5}))
    assert all_bytes(target) == before == all_bytes(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("prepare:\n  filters:\n    max_tok: 5\n", "prepare.filters.max_tok: unknown parameter"),
        ("prepare:\n  batch_size: lots\n", "prepare.batch_size: expected an integer, got str 'lots'"),
        ("prepare:\n  sft_sources: [openr1, gsm8k, math]\n", "prepare.sft_sources[2]: must be one of"),
        ("prepare:\n  pairs_per_problem: 0\n", "prepare.pairs_per_problem: must be > 0"),
    ],
)
def test_unknown_or_ill_typed_parameter(tmp_path, text, key):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(params_with(yaml.safe_load(text))), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_section("prepare", PrepareConfig, params)


def test_tokenizer_path_that_does_not_exist(prepare_config, tmp_path):
    missing = tmp_path / "models" / "nope"
    with pytest.raises(PipelineError, match=re.escape(f"model not found: {missing} does not exist")):
        load_tokenizer(missing)
    out = tmp_path / "p"
    with pytest.raises(PipelineError, match=re.escape(str(missing))):
        prepare(prepare_config(out, tokenizer=str(missing)))
    assert_nothing_written(out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=re.escape(f"{tmp_path / 'empty'} has no config.json")):
        load_tokenizer(tmp_path / "empty")


# --- the stage as a command ------------------------------------------------------------------------


def test_stage_exits_2_with_one_error_line(tmp_path, copy_sample, tiny_model_dir):
    """`python -m stages.prepare` in a project folder: bad input -> exit 2, `error: ...`, no traceback,
    and neither the output folder nor metrics/prepare.json appear."""
    raw = copy_sample("raw")
    bad = raw / "cmath" / "test.jsonl"
    with bad.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
    params = params_with({"prepare": {"source": "local", "raw_dir": "raw", "tokenizer": str(tiny_model_dir),
                                      "out_dir": "data/prepared"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: raw/cmath/test.jsonl:{SMALL_SAMPLE.n_cmath_test + 1}: malformed JSON line")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


# --- benchmark files are checked like training files ----------------------------------------------


def test_an_empty_benchmark_file_is_one_clear_error(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    path = raw / "gsm8k" / "test.jsonl"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}: no questions (the file is empty)")):
        prepare(prepare_config(tmp_path / "p", raw_dir=raw))
    assert_nothing_written(tmp_path / "p")


def test_a_gold_that_is_not_a_number_is_one_clear_error(prepare_config, copy_sample, tmp_path):
    raw = copy_sample()
    path = raw / "cmath" / "test.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"question": "小明有几个苹果？", "golden": "abc"}, ensure_ascii=False) + "\n")
    row = SMALL_SAMPLE.n_cmath_test + 1
    with pytest.raises(DataError, match=re.escape(f"{path}: row {row}: gold answer 'abc' is not a number")):
        prepare(prepare_config(tmp_path / "p", raw_dir=raw))
    assert_nothing_written(tmp_path / "p")


def test_a_byte_order_mark_is_read(prepare_config, copy_sample, tmp_path):
    """Spreadsheet tools write UTF-8 with a BOM: the file reads as without one."""
    raw = copy_sample()
    plain = prepare(prepare_config(tmp_path / "a", raw_dir=raw))
    for name in ("gsm8k/test.jsonl", "cmath/test.jsonl"):
        path = raw / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert prepare(prepare_config(tmp_path / "b", raw_dir=raw)) == plain
    for name in ("gsm8k", "cmath"):
        assert (tmp_path / "a/eval" / f"{name}.jsonl").read_bytes() == (tmp_path / "b/eval" / f"{name}.jsonl").read_bytes()


def test_the_real_math500_file_is_read_as_a_benchmark():
    from mathpipe.data.prepare import eval_rows

    path = Path(__file__).resolve().parents[2] / "shared/data/math500/test.jsonl"
    if not path.is_file():
        pytest.skip(f"real data not found: {path}")
    rows = eval_rows("math", [path])
    source = read_jsonl(path)
    assert len(rows) == 500 and [r["gold"] for r in rows] == [s["answer"].strip() for s in source]
    assert [r["question"] for r in rows] == [s["problem"] for s in source]


# --- decontamination -------------------------------------------------------------------------------


def test_the_sample_holds_no_benchmark_question_and_plain_ngrams_would_flag_most(prepared):
    """The generator never puts a test problem into training, and the check agrees; plain 8-gram
    overlap (open-r1's) cannot tell the shared templates from shared problems."""
    _, summary, _, _ = prepared
    decontamination = summary["decontamination"]
    for benchmark in ("gsm8k", "cmath", "math"):
        assert decontamination[benchmark]["questions_in_training"] == 0, decontamination
        assert decontamination[benchmark]["training_problems_matched"] == 0
    assert decontamination["gsm8k"]["training_problems_sharing_any_ngram"] > SMALL_SAMPLE.n_train // 4
    assert summary["openr1"]["after_contaminated"] == summary["openr1"]["after_finish_stop"]


@pytest.mark.parametrize("action", ["drop", "report"])
def test_planted_benchmark_questions_are_counted_and_dropped(prepare_config, copy_sample, tmp_path, action):
    raw = copy_sample()
    questions = [json.loads(line)["question"] for line in (raw / "gsm8k/test.jsonl").read_text().splitlines()[:3]]
    planted = {}

    def plant(table: pa.Table) -> pa.Table:
        rows = table.to_pylist()
        for row, question in zip(rows[:3], questions):  # another case, other spacing: the same problem
            row["problem"] = "  " + question.upper().replace(" ", "\n  ", 3) + " "
            planted[row["uuid"]] = row["problem"]
        return pa.Table.from_pylist(rows, schema=table.schema)

    rewrite_shard(shard(raw, 0), plant)
    out = tmp_path / "p"
    summary = prepare(prepare_config(out, raw, decontamination={"action": action}))
    found = summary["decontamination"]["gsm8k"]
    assert found["questions_in_training"] == 3 and found["training_problems_matched"] == 3, summary["decontamination"]
    kept = {r["id"] for r in read_jsonl(out / "sft_train.jsonl") + read_jsonl(out / "sft_val.jsonl")}
    counts = summary["openr1"]
    if action == "drop":
        assert not kept & set(planted)
        assert counts["after_finish_stop"] - counts["after_contaminated"] == 3
    else:
        assert counts["after_contaminated"] == counts["after_finish_stop"]
