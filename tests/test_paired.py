"""Paired comparison (mathpipe.evaluation.paired): the difference of two models on the same
questions, its interval, and the exact McNemar p-value, checked against figures computed by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mathpipe.errors import DataError
from mathpipe.evaluation.paired import compare, mcnemar_exact, per_question, verdict


def test_mcnemar_exact_against_hand_computed_binomial_tails():
    # 4 fixed, 2 broken: 2 * P(X <= 2), X ~ Bin(6, 1/2) = 2 * (1 + 6 + 15) / 64
    assert mcnemar_exact(4, 2) == pytest.approx(44 / 64)
    # 12 fixed, 6 broken (GRPO against SFT on 200 questions, issue 30): 2 * sum_{k<=6} C(18, k) / 2^18
    assert mcnemar_exact(12, 6) == pytest.approx(2 * sum(math.comb(18, k) for k in range(7)) / 2**18)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_is_symmetric_and_a_probability(fixed, broken):
    p = mcnemar_exact(fixed, broken)
    assert 0 < p <= 1 and p == mcnemar_exact(broken, fixed)


def test_greedy_comparison_counts_fixed_and_broken_questions():
    a = {f"q{i}": float(i < 5) for i in range(10)}  # right on q0..q4
    b = {f"q{i}": float(2 <= i < 9) for i in range(10)}  # right on q2..q8
    result = compare(a, b, "sft", "grpo")
    assert result["fixed"] == ["q5", "q6", "q7", "q8"] and result["broken"] == ["q0", "q1"]
    assert result["difference"] == pytest.approx(0.2) and result["test"] == "mcnemar_exact"
    assert result["p_value"] == pytest.approx(44 / 64) and not result["significant"]
    # the per-question differences: four +1, two -1, four 0 -> sd by hand
    sd = math.sqrt((4 * 0.8**2 + 2 * 1.2**2 + 4 * 0.2**2) / 9)
    assert result["ci95_high"] - result["difference"] == pytest.approx(1.959964 * sd / math.sqrt(10), rel=1e-5)
    assert verdict(result) == "no significant difference"


def test_a_large_one_sided_change_is_significant():
    a = {f"q{i}": 0.0 for i in range(100)}
    b = {f"q{i}": float(i < 30) for i in range(100)}
    result = compare(a, b, "base", "sft")
    assert result["significant"] and result["p_value"] == pytest.approx(2 / 2**30)
    assert verdict(result) == "sft better (p < 0.05)"


def test_sampled_answers_are_compared_by_their_per_question_shares():
    a = per_question([{"id": q, "correct": c} for q, cs in (("x", [1, 0, 0, 0]), ("y", [1, 1, 0, 0])) for c in cs])
    assert a == {"x": 0.25, "y": 0.5}
    b = {"x": 0.75, "y": 0.5}
    result = compare(a, b)
    assert result["test"] == "paired_z" and result["fixed"] == ["x"] and result["broken"] == []
    assert result["difference"] == pytest.approx(0.25)


def test_different_questions_or_a_bad_file_are_named():
    with pytest.raises(DataError, match=r"sft and grpo answered different questions: 1 only in sft \(q2"):
        compare({"q1": 1.0, "q2": 0.0}, {"q1": 1.0}, "sft", "grpo")
    with pytest.raises(DataError, match=r"x.jsonl: row 1 has no 'id' or 'correct'"):
        per_question([{"question": "?"}], "x.jsonl")
