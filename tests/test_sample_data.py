"""Tests of the sample-data generator (mathpipe.data.sample_data): schemas, determinism, arithmetic, splits."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathpipe.answers import extract_answer
from mathpipe.data import sample_data
from mathpipe.data.sample_data import SampleConfig, write_sample_data
from mathpipe.data.schemas import OPENR1_SCHEMA
from mathpipe.errors import ConfigError
from tests.params import param_config, params_section

SMALL = dict(n_train=200, n_gsm8k_test=40, n_cmath_test=40, n_math_test=30, n_gsm8k_train=40, shards=3)
EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
CALC = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")
BOXED = re.compile(r"\\boxed\{(-?\d+)\}")
CJK = re.compile(r"[\u4e00-\u9fff]")


def calc(a: str, op: str, b: str) -> int | None:
    a, b = int(a), int(b)
    if op == "/":
        return a // b if b and a % b == 0 else None
    return a + b if op == "+" else a - b if op == "-" else a * b


def equations_hold(text: str) -> list[bool]:
    return [calc(a, op, b) == int(c) for a, op, b, c in EQ.findall(text)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def shard_paths(out: Path) -> list[Path]:
    return sorted((out / "openr1").glob("*.parquet"))


def read_rows(out: Path) -> list[dict]:
    return [row for p in shard_paths(out) for row in pq.read_table(p).to_pylist()]


def all_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "raw"
    counts = write_sample_data(out, param_config(SampleConfig, "sample", seed=7, **SMALL))
    return out, counts, read_rows(out)


def test_same_seed_is_byte_identical_and_another_seed_differs(data, tmp_path):
    out, _, _ = data
    write_sample_data(tmp_path / "again", param_config(SampleConfig, "sample", seed=7, **SMALL))
    write_sample_data(tmp_path / "other", param_config(SampleConfig, "sample", seed=8, **SMALL))
    first, again, other = all_bytes(out), all_bytes(tmp_path / "again"), all_bytes(tmp_path / "other")
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first)


def test_files_schemas_and_counts(data):
    out, counts, rows = data
    paths = shard_paths(out)
    assert [p.name for p in paths] == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    for p in paths:
        assert pq.read_schema(p).equals(OPENR1_SCHEMA, check_metadata=False)
        assert pq.read_table(p).schema.equals(OPENR1_SCHEMA, check_metadata=False)
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    assert sum(sizes) == len(rows) == 200 and max(sizes) - min(sizes) <= 1
    assert counts == {
        **{f"openr1/{p.name}": s for p, s in zip(paths, sizes)},
        "gsm8k/train.jsonl": 40, "gsm8k/test.jsonl": 40, "cmath/test.jsonl": 40, "math/test.jsonl": 30,
    }
    for name in ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "cmath/test.jsonl", "math/test.jsonl"):
        assert len(read_jsonl(out / name)) == counts[name]
    assert sorted(p.name for p in out.iterdir()) == ["cmath", "gsm8k", "math", "openr1"]


def test_list_columns_have_one_entry_per_generation(data):
    _, _, rows = data
    for r in rows:
        n = len(r["generations"])
        assert 2 <= n <= 4
        assert all(g.startswith("<think>\n") for g in r["generations"])
        for col in ("is_reasoning_complete", "correctness_math_verify", "correctness_llama", "finish_reasons"):
            assert r[col] is None or len(r[col]) == n, col
        assert r["question_type"] == "math-word-problem"
        assert r["problem_type"] in {"Algebra", "Number Theory", "Other"}


def test_nullable_columns_are_null_on_some_rows_only(data):
    _, _, rows = data
    llama_null = sum(r["correctness_llama"] is None for r in rows) / len(rows)
    finish_null = sum(r["finish_reasons"] is None for r in rows) / len(rows)
    assert 0.75 < llama_null < 0.97
    assert 0.25 < finish_null < 0.55
    for r in rows:  # never null: every other column
        assert all(r[k] is not None for k in r if k not in ("correctness_llama", "finish_reasons"))


def test_flags_agree_with_boxed_answers(data):
    _, _, rows = data
    for r in rows:
        for i, g in enumerate(r["generations"]):
            complete = r["is_reasoning_complete"][i]
            assert complete == ("\n</think>\n\n" in g)
            boxed = BOXED.findall(g)
            assert bool(boxed) == complete or (complete and r["correctness_llama"] is not None)
            assert r["correctness_math_verify"][i] == (complete and bool(boxed) and boxed[-1] == r["answer"])
            if r["finish_reasons"] is not None:
                assert r["finish_reasons"][i] == ("stop" if complete else "length")
            if r["correctness_llama"] is not None:  # the judge also finds the right answers left unboxed
                right = complete and extract_answer(g) == r["answer"]
                assert r["correctness_llama"][i] == right
                assert r["correctness_math_verify"][i] == (right and bool(boxed))
        judged = r["correctness_llama"] or r["correctness_math_verify"]
        assert r["correctness_count"] == sum(a or b for a, b in zip(r["correctness_math_verify"], judged))
        ok = [g for g, c in zip(r["generations"], r["correctness_math_verify"]) if c]
        assert r["messages"] == [
            {"content": r["problem"], "role": "user"},
            {"content": ok[0] if ok else r["generations"][0], "role": "assistant"},
        ]


def test_wrong_traces_contain_one_kind_of_mistake_and_right_traces_none(data):
    _, _, rows = data
    slips = reading_errors = 0
    for r in rows:
        reference = [tuple(e) for e in EQ.findall(r["solution"])]
        judged = r["correctness_llama"] or r["correctness_math_verify"]
        for g, complete, *verdicts in zip(r["generations"], r["is_reasoning_complete"], r["correctness_math_verify"],
                                          judged):
            if not complete:
                continue
            correct = any(verdicts)
            think = g.split("</think>")[0]
            holds = equations_hold(think)
            assert EQ.findall(g)[-1][3] == extract_answer(g)
            if correct:
                assert holds and all(holds), g
                assert [tuple(e) for e in EQ.findall(think)][: len(reference)] == reference, g
            elif not all(holds):
                slips += 1  # a miscomputed result
            else:
                reading_errors += 1  # right arithmetic on a misread number, a wrong operation or an extra step
                steps = "\n".join(line for line in think.splitlines() if "double-check" not in line and "检查" not in line)
                assert [tuple(e) for e in EQ.findall(steps)] != reference, g
    assert slips > 0 and reading_errors > slips  # three of the four kinds of mistake are reading errors


def test_trace_mix_gives_preference_pairs(data):
    _, _, rows = data
    flags = [(c, d) for r in rows for c, d in zip(r["correctness_math_verify"], r["is_reasoning_complete"])]
    assert 0.2 < sum(d and not c for c, d in flags) / len(flags) < 0.4
    assert 0 < sum(not d for _, d in flags) / len(flags) < 0.12
    pairs = sum(
        any(c and d for c, d in zip(r["correctness_math_verify"], r["is_reasoning_complete"]))
        and any(d and not c for c, d in zip(r["correctness_math_verify"], r["is_reasoning_complete"]))
        for r in rows
    )
    assert pairs / len(rows) >= 0.3
    assert sum(r["correctness_count"] > 0 for r in rows) / len(rows) > 0.9


def test_reference_solutions_are_right(data):
    _, _, rows = data
    for r in rows:
        holds = equations_hold(r["solution"])
        assert 1 <= len(holds) <= 3 and all(holds), r["solution"]
        eqs = EQ.findall(r["solution"])
        assert eqs[-1][3] == r["answer"]
        assert all(eqs[i + 1][0] == eqs[i][3] for i in range(len(eqs) - 1))  # a chained computation
        assert r["solution"].splitlines()[-1].rstrip("。.").endswith(r["answer"])
        for _, op, b, c in eqs:
            assert int(c) <= 150 and (op != "*" or int(c) <= 120) and (op == "*" or 2 <= int(b) <= 60)


def test_languages_sources_and_duplicates(data):
    _, _, rows = data
    chinese = [bool(CJK.search(r["problem"])) for r in rows]
    assert sum(chinese) == round(0.3 * len(rows))
    for r, zh in zip(rows, chinese):
        assert (r["source"] in {"cn_k12", "cn_contest"}) == zh
        assert bool(CJK.search(r["solution"])) == zh
    assert len({r["uuid"] for r in rows}) == len(rows)
    assert 1 <= len(rows) - len({r["problem"] for r in rows}) <= 6


def test_gsm8k_answers_end_with_the_result_of_their_steps(data):
    out, _, _ = data
    for name in ("train", "test"):
        for row in read_jsonl(out / f"gsm8k/{name}.jsonl"):
            assert list(row) == ["question", "answer"]
            assert not CJK.search(row["question"])
            last = row["answer"].splitlines()[-1]
            assert re.fullmatch(r"#### \d+", last)
            steps = CALC.findall(row["answer"])
            assert steps
            for a, op, b, c, shown in steps:
                assert calc(a, op, b) == int(c) == int(shown)
            assert last == f"#### {steps[-1][3]}"


def test_cmath_rows_look_like_the_real_file(data):
    out, _, _ = data
    for row in read_jsonl(out / "cmath/test.jsonl"):
        assert list(row) == ["grade", "question", "golden", "reasoning_step", "num_digits"]
        assert isinstance(row["golden"], str) and int(row["golden"]) >= 0
        assert CJK.search(row["question"])
        assert 1 <= row["grade"] <= 6 and 1 <= row["reasoning_step"] <= 3
        numbers = re.findall(r"\d+", row["question"]) + [row["golden"]]
        assert row["num_digits"] >= max(len(n) for n in numbers)


def test_math_rows_look_like_math_500(data):
    out, _, _ = data
    rows = read_jsonl(out / "math/test.jsonl")
    for i, row in enumerate(rows):
        assert list(row) == ["problem", "solution", "answer", "subject", "level", "unique_id"]
        assert re.fullmatch(r"\d+", row["answer"]) and 1 <= row["level"] <= 5
        assert row["subject"] in {"Prealgebra", "Number Theory"}
        assert row["unique_id"] == f"test/{row['subject'].lower().replace(' ', '_')}/{i}.json"
        assert not re.search(r"(?<![$\d])\d+(?![$\d])", row["problem"])  # every number in math mode
        assert extract_answer(row["solution"]) == row["answer"] and "\\boxed{" in row["solution"]


def test_some_judged_rows_hold_right_traces_only_the_llama_judge_finds(data):
    _, _, rows = data
    llama_only = [(r, i) for r in rows if r["correctness_llama"] for i, ok in enumerate(r["correctness_llama"])
                  if ok and not r["correctness_math_verify"][i]]
    assert llama_only
    for r, i in llama_only:
        assert "\\boxed" not in r["generations"][i] and extract_answer(r["generations"][i]) == r["answer"]


def test_test_questions_never_appear_in_training(data):
    out, _, rows = data
    test = {r["question"] for r in read_jsonl(out / "gsm8k/test.jsonl") + read_jsonl(out / "cmath/test.jsonl")}
    math = [r["problem"].replace("$", "") for r in read_jsonl(out / "math/test.jsonl")]
    train = {r["problem"] for r in rows} | {r["question"] for r in read_jsonl(out / "gsm8k/train.jsonl")}
    assert len(test) == 80 and len(set(math)) == 30 and not test & set(math)
    test |= set(math)
    assert not test & train


def test_held_out_collisions_are_rejected(monkeypatch, tmp_path):
    """In a problem space of about a hundred texts, 60 draws would repeat some unless they are rejected."""
    monkeypatch.setattr(sample_data, "GROUP_START_P", 0.0)
    monkeypatch.setitem(sample_data.NAMES, "en", ["Tom", "Ann"])
    monkeypatch.setitem(sample_data.OBJECTS, "en", [("apples", "")])
    for key in ("start", "+", "-", "*", "/", "question", "frame"):
        monkeypatch.setitem(sample_data.TEMPLATES["en"], key, sample_data.TEMPLATES["en"][key][:1])
    cfg = param_config(SampleConfig, "sample", n_train=20, n_gsm8k_test=20, n_cmath_test=5, n_math_test=5, n_gsm8k_train=20, shards=1,
                       max_steps=1,
                       chinese_fraction=0.0, operand_max=6, value_max=12)
    write_sample_data(tmp_path / "raw", cfg)
    test = [r["question"] for r in read_jsonl(tmp_path / "raw/gsm8k/test.jsonl")]
    train = [r["question"] for r in read_jsonl(tmp_path / "raw/gsm8k/train.jsonl")]
    openr1 = {r["problem"] for r in read_rows(tmp_path / "raw")}
    assert len(openr1) == 19  # 20 rows, one a deliberate duplicate
    assert len(set(test) | set(train) | openr1) == 20 + 20 + 19


@pytest.mark.parametrize(
    "bad, key",
    [
        (dict(n_train=0), "sample.n_train"),
        (dict(chinese_fraction=1.5), "sample.chinese_fraction"),
        (dict(shards=0), "sample.shards"),
        (dict(n_train=3, shards=4), "sample.shards"),
        (dict(max_steps=4), "sample.max_steps"),
        (dict(n_gsm8k_train=-1), "sample.n_gsm8k_train"),
        (dict(seed="1234"), "sample.seed"),
        (dict(n_train=True), "sample.n_train"),
        (dict(chinese_fraction=float("nan")), "sample.chinese_fraction"),
    ],
)
def test_bad_config_names_the_key(bad, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        param_config(SampleConfig, "sample", **bad)


def test_from_dict_rejects_unknown_keys():
    cfg = param_config(SampleConfig, "sample", n_train=10, shards=2)
    assert (cfg.n_train, cfg.shards, cfg.seed) == (10, 2, params_section("sample.seed"))
    with pytest.raises(ConfigError, match=r"sample\.n_trian: unknown parameter"):
        param_config(SampleConfig, "sample", n_trian=10)


def test_failure_while_writing_leaves_nothing(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sample_data, "write_jsonl", boom)  # fails after the parquet shards are written
    with pytest.raises(OSError, match="disk full"):
        write_sample_data(tmp_path / "raw", param_config(SampleConfig, "sample", seed=1, **SMALL))
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "raw").mkdir()  # an earlier output survives a failed rewrite
    (tmp_path / "raw" / "keep.txt").write_text("old")
    with pytest.raises(OSError):
        write_sample_data(tmp_path / "raw", param_config(SampleConfig, "sample", seed=1, **SMALL))
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]
    assert (tmp_path / "raw" / "keep.txt").read_text() == "old"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    n_train=st.integers(1, 40),
    shards=st.integers(1, 5),
    max_steps=st.integers(1, 3),
    chinese_fraction=st.floats(0, 1),
)
def test_any_valid_config_writes_consistent_data(seed, n_train, shards, max_steps, chinese_fraction):
    shards = min(shards, n_train)
    cfg = param_config(SampleConfig, "sample", seed=seed, n_train=n_train, n_gsm8k_test=5, n_cmath_test=5, n_math_test=5, n_gsm8k_train=3,
                       shards=shards, max_steps=max_steps, chinese_fraction=chinese_fraction)
    with tempfile.TemporaryDirectory() as d:
        counts = write_sample_data(Path(d) / "raw", cfg)
        rows = read_rows(Path(d) / "raw")
        assert len(shard_paths(Path(d) / "raw")) == shards
        assert sum(v for k, v in counts.items() if k.startswith("openr1/")) == len(rows) == n_train
        assert sum(bool(CJK.search(r["problem"])) for r in rows) == round(n_train * chinese_fraction)
        for r in rows:
            holds = equations_hold(r["solution"])
            assert 1 <= len(holds) <= max_steps and all(holds)
            assert all(2 <= int(n) <= 60 for n in re.findall(r"\d+", r["problem"]))
            assert r["correctness_count"] == sum(a or b for a, b in zip(r["correctness_math_verify"],
                                                                    r["correctness_llama"] or r["correctness_math_verify"]))


def test_a_held_out_problem_never_reappears_reworded(monkeypatch, tmp_path):
    """The same story and numbers asked another way ("... now?", "... in the end?") is the same
    problem: with one question template per wording, few names and small numbers, 60 draws would
    repeat some stories unless the generator rejects them by their content, not their text."""
    from mathpipe.data.decontaminate import BenchmarkIndex

    monkeypatch.setattr(sample_data, "GROUP_START_P", 0.0)
    monkeypatch.setitem(sample_data.NAMES, "en", ["Tom", "Ann"])
    monkeypatch.setitem(sample_data.OBJECTS, "en", [("apples", "")])
    for key in ("start", "+", "-", "*", "/", "frame"):
        monkeypatch.setitem(sample_data.TEMPLATES["en"], key, sample_data.TEMPLATES["en"][key][:1])
    cfg = param_config(SampleConfig, "sample", n_train=20, n_gsm8k_test=20, n_cmath_test=5, n_math_test=5,
                       n_gsm8k_train=20, shards=1, max_steps=1, chinese_fraction=0.0, operand_max=6, value_max=12)
    write_sample_data(tmp_path / "raw", cfg)
    test = [r["question"] for r in read_jsonl(tmp_path / "raw/gsm8k/test.jsonl")]
    index = BenchmarkIndex({"gsm8k": [(f"q{i}", q) for i, q in enumerate(test)]}, n=4)
    training = [r["question"] for r in read_jsonl(tmp_path / "raw/gsm8k/train.jsonl")]
    training += [r["problem"] for r in read_rows(tmp_path / "raw")]
    assert [p for p in training if index.matches(p)] == []
