"""The answer checker: extraction, numbers, equivalence, and every gold answer of the real data."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mathpipe.answers import (
    BENCHMARKS,
    Verdict,
    check,
    extract_answer,
    extract_gold,
    final_answer,
    is_equivalent,
    opens_thinking,
    parse_number,
)
from mathpipe.errors import ConfigError, PipelineError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _rows(relative: str) -> list[dict]:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"real data not found: {path}")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------------------------------
# Real data: every gold answer scores against itself, and not against another question's gold
# --------------------------------------------------------------------------------------------------

REAL_SETS = [
    ("gsm8k/test.jsonl", "gsm8k", 1319),
    ("cmath/test.jsonl", "cmath", 1098),
    ("cmath/dev.jsonl", "cmath", 600),
    ("cmath/distractor.jsonl", "cmath", 360),
]


@pytest.mark.parametrize(("relative", "benchmark", "n_rows"), REAL_SETS)
def test_real_gold_scored_against_itself_is_all_correct(relative, benchmark, n_rows):
    rows = _rows(relative)
    field = BENCHMARKS[benchmark]
    assert len(rows) == n_rows
    wrong = [row[field] for row in rows if not check(row[field], row[field], benchmark).correct]
    assert wrong == []


@pytest.mark.parametrize(("relative", "benchmark", "n_rows"), REAL_SETS[:3])
def test_real_gold_scored_against_another_question_is_rarely_correct(relative, benchmark, n_rows):
    golds = [row[BENCHMARKS[benchmark]] for row in _rows(relative)]
    rotated = golds[1:] + golds[:1]
    correct = sum(check(pred, gold, benchmark).correct for pred, gold in zip(rotated, golds))
    assert correct / len(golds) < 0.05


def test_math500_solutions_score_their_answers_and_not_another_problems():
    """MATH-500's worked solutions as predictions (the answer is their last \\boxed{}), its answers as
    gold: intervals, degrees, \\text{}, matrices, fractions all match; another problem's answer rarely."""
    rows = _rows("math500/test.jsonl")
    assert len(rows) == 500
    assert [r["answer"] for r in rows if not check(r["solution"], r["answer"], "math").correct] == []
    rotated = rows[1:] + rows[:1]
    correct = sum(check(other["solution"], row["answer"], "math").correct for other, row in zip(rotated, rows))
    assert correct / len(rows) < 0.05


def test_every_math500_gold_is_checkable():
    from mathpipe.answers import gold_is_checkable

    assert all(gold_is_checkable(r["answer"], "math") for r in _rows("math500/test.jsonl"))
    assert not gold_is_checkable("", "math") and not gold_is_checkable("  ", "math")
    assert not gold_is_checkable("\\text{Evelyn}", "gsm8k")  # a numeric benchmark needs a number


def test_gsm8k_gold_extraction_matches_the_final_line():
    for row in _rows("gsm8k/test.jsonl"):
        final_line = row["answer"].strip().splitlines()[-1]
        assert final_line.startswith("####")
        gold = extract_gold(row["answer"], "gsm8k")
        assert gold == final_line.removeprefix("####").strip()
        assert parse_number(gold) is not None, gold


def test_every_cmath_gold_is_a_number():
    for relative in ("cmath/test.jsonl", "cmath/dev.jsonl", "cmath/distractor.jsonl"):
        for row in _rows(relative):
            assert parse_number(row["golden"]) is not None, (relative, row["golden"])


# --------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("so the loss is\n#### -5", "-5"),
        ("#### 7", "7"),
        ("#### $1,450,000.", "1,450,000"),
        ("first try #### 3\nno wait\n#### 4", "4"),
        ("We get \\boxed{3} then correct it: \\boxed{5}.", "5"),
        ("Thus $\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\fbox{42}", "42"),
        ("\\boxed{12} and a truncated \\boxed{1", "12"),
        ("The answer is 42.", "42"),
        ("so THE FINAL ANSWER IS: $18.00.", "18.00"),
        ("The answer is 3. Then 4 + 5 = 9", "3"),
        ("The answer is \\(2\\sqrt{3}\\).", "2\\sqrt{3}"),
        ("小明有3个苹果，又买了5个，吃了2个，再买6个。3+5-2+6=12。答案是 12", "12"),
        ("3+5=8，8+4=12\n答案：12个。", "12个"),
        ("先算 45-3=42，再算 42÷2=21。\n答：小明一共有21本书。", "21"),
        ("I have 5 apples and eat 2, so 3 are left", "3"),
        ("The temperature drops to -7", "-7"),
        ("it costs 1,000.50 dollars", "1,000.50"),
        ("half of it: 3/4", "3/4"),
        ("所以是4分之3", "4分之3"),
        ("增长了40%", "40%"),
        ("10-5", "5"),
        ("<think>Maybe 12? Or 7.</think>The result is 9", "9"),
        ("<think>Maybe 12? Or \\boxed{7}.</think>So the answer is 9.", "9"),
        ("<think>the answer is 12</think>I am not sure.", "12"),
        ("no digits here at all", None),
        ("", None),
        ("\\boxed{}", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_tolerates_non_strings():
    assert extract_answer(None) is None  # type: ignore[arg-type]


def test_extract_gold():
    assert extract_gold("a\n#### 5\nmore\n#### 1,000 ", "gsm8k") == "1,000"
    assert extract_gold(" 18 ", "gsm8k") == "18"  # already a final answer
    assert extract_gold(" 4/10 ", "cmath") == "4/10"
    assert extract_gold("\\frac{1}{2} ", "math") == "\\frac{1}{2}"


def test_extract_gold_unknown_benchmark_names_it_and_the_known_ones():
    with pytest.raises(ConfigError, match="mmlu") as err:
        extract_gold("5", "mmlu")
    assert isinstance(err.value, PipelineError)
    assert all(name in str(err.value) for name in BENCHMARKS)


# --------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18", 18),
        ("-5", -5),
        ("−5", -5),
        ("+5", 5),
        ("$18", 18),
        ("\\$18", 18),
        ("$1,000.00", 1000),
        ("1,450,000", 1450000),
        ("18.00", 18),
        ("0.0303", Fraction(303, 10000)),
        ("3/4", Fraction(3, 4)),
        ("72/180", Fraction(2, 5)),
        ("-3/4", Fraction(-3, 4)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("\\dfrac{3}{4}", Fraction(3, 4)),
        ("\\tfrac{3}{4}", Fraction(3, 4)),
        ("-\\frac{3}{4}", Fraction(-3, 4)),
        ("4分之3", Fraction(3, 4)),
        ("1又2分之1", Fraction(3, 2)),
        ("40%", Fraction(2, 5)),
        ("40\\%", Fraction(2, 5)),
        ("百分之40", Fraction(2, 5)),
        ("\\text{18}", 18),
        ("18\\text{ dollars}", 18),
        ("1\\,000", 1000),
        ("18元", 18),
        ("￥18", 18),
        ("45个", 45),
        ("3.5万", 35000),
        ("12 apples", 12),
        ("5cm", 5),
        ("30^\\circ", 30),
        ("１２", 12),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize(
    "text",
    ["1,2", "(1, 2)", "1,0000", "5x", "x^2+1", "2\\sqrt{3}", "3/0", "abc", "", "1/2/3", "5 and 6"],
)
def test_parse_number_rejects_non_numbers(text):
    assert parse_number(text) is None


# --------------------------------------------------------------------------------------------------
# Equivalence
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("1,000.00", "1000"),
        ("1000", "1,000"),
        ("$18", "18"),
        ("7", "7"),
        ("-3", "-3"),
        ("3/4", "0.75"),
        ("\\frac{3}{4}", "0.75"),
        ("4分之3", "3/4"),
        ("0.75", "\\dfrac{3}{4}"),
        ("2/5", "72/180"),
        ("0.4", "72/180"),
        ("40", "40%"),
        ("0.4", "40%"),
        ("40%", "40%"),
        ("40%", "0.4"),
        ("27.3%", "0.273"),
        ("(1, 2)", "(1,2)"),
        ("2\\sqrt{3}", "\\sqrt{12}"),
        ("x^2+1", "1+x^2"),
        ("\\frac{\\pi}{2}", "\\pi/2"),
        ("Monday", "monday"),
    ],
)
def test_equivalent(pred, gold):
    assert is_equivalent(pred, gold)


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("18", "-18"),
        ("1", "10"),
        ("1,2", "12"),
        ("0.33", "1/3"),
        ("(1, 2)", "(2, 1)"),
        ("2\\sqrt{3}", "\\sqrt{13}"),
        ("4", "40%"),
        (None, "5"),
        ("", "5"),
        ("5", ""),
    ],
)
def test_not_equivalent(pred, gold):
    assert not is_equivalent(pred, gold)


@pytest.mark.parametrize(
    "odd",
    ["\\frac{", "}{", "\\boxed{", "$$", "\\sqrt", "((((", "1/0", "\\x\\y\\z", "∞", "%", "9" * 5000],
)
def test_is_equivalent_never_raises_on_odd_input(odd):
    assert is_equivalent(odd, "5") in (True, False)
    assert is_equivalent("5", odd) in (True, False)


def test_is_equivalent_works_outside_the_main_thread():
    results = []
    def compare():
        results.append(is_equivalent("2\\sqrt{3}", "\\sqrt{12}"))

    worker = threading.Thread(target=compare)
    worker.start()
    worker.join(timeout=60)
    assert results == [True]


def test_check_returns_a_verdict():
    verdict = check("<think>7 or 8</think>The final answer is 1,000.", "so\n#### 1000", "gsm8k")
    assert verdict == Verdict(extracted="1,000", gold="1000", correct=True)
    assert check("所以是20。答案是 20个", "12", "cmath") == Verdict("20个", "12", False)
    assert check("I cannot tell.", "5", "math") == Verdict(None, "5", False)


def test_cmath_only_the_final_answer_counts():
    solution = "一共有36个，分给3个小朋友，每人12个。" "36÷3=12。答案是 12"
    assert check(solution, "12", "cmath").correct
    assert not check(solution, "36", "cmath").correct
    assert not check(solution, "3", "cmath").correct


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

integers = st.integers(min_value=-(10**12), max_value=10**12)


WRAPPERS = ["{}", "\\boxed{{{}}}", "#### {}", "The answer is {}.", "Step 1: 3+4=7.\n#### {}"]


@st.composite
def formatted_integers(draw):
    n = draw(integers)
    body = f"{abs(n):,}" if draw(st.booleans()) else str(abs(n))
    if draw(st.booleans()):
        body = "$" + body
    if draw(st.booleans()):
        body += ".00"
    text = ("-" if n < 0 else "") + body
    wrap = draw(st.sampled_from(WRAPPERS))
    return n, wrap.format(text)


@settings(max_examples=300, deadline=None)
@given(formatted_integers())
def test_any_formatted_integer_is_extracted_and_equivalent(case):
    n, text = case
    assert is_equivalent(extract_answer(text), str(n)), (text, extract_answer(text))


@settings(max_examples=300, deadline=None)
@given(integers, integers)
def test_different_integers_are_never_equivalent(n, m):
    if n != m:
        assert not is_equivalent(str(n), str(m))
        assert not is_equivalent(f"{n:,}", f"{m:,}")


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(0, 6), st.integers(0, 6))
def test_fraction_equals_its_exact_decimal(p, twos, fives):
    q = 2**twos * 5**fives  # only these denominators give a terminating decimal
    decimal = format(Decimal(p) / Decimal(q), "f")
    assert is_equivalent(f"{p}/{q}", decimal)
    assert is_equivalent(f"\\frac{{{p}}}{{{q}}}", decimal)
    assert is_equivalent(decimal, f"{p}/{q}")


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_extract_answer_never_raises(text):
    answer = extract_answer(text)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip() and answer)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_number_never_raises(text):
    assert parse_number(text) is None or isinstance(parse_number(text), Fraction)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789$,.-/\\{}boxed#% 答案是分之又frac", max_size=30))
def test_extract_and_compare_never_raise_on_answer_like_text(text):
    assert is_equivalent(extract_answer(text), "5") in (True, False)


# --- an answer only from a finished output ------------------------------------------------------------------

FINISHED = "<think>\nTom has 3 apples and buys 4: 3 + 4 = 7.\n</think>\n\nTom has \\boxed{7} apples."
UNFINISHED = "<think>\nTom has 3 apples and buys 4. Let me check again: 3 + 4 = 7"  # ends on the gold


@pytest.mark.parametrize(("text", "finish_reason", "opened", "expected"), [
    (FINISHED, "stop", False, ("7", None)),
    (UNFINISHED, "stop", False, (None, "open_thinking")),  # EOS inside the thinking: no answer given
    (UNFINISHED, "length", False, (None, "length")),
    (FINISHED, "length", False, (None, "length")),  # whatever came before, the output was cut off
    ("3 + 4 = 7.\n</think>\n\n\\boxed{7}", "stop", True, ("7", None)),  # the prompt opened <think>
    ("3 + 4 = 7, so 7", "stop", True, (None, "open_thinking")),
    ("No thinking: 3 + 4 = \\boxed{7}", "stop", False, ("7", None)),
    ("<think>a</think> <think>b, so 7", "stop", False, (None, "open_thinking")),  # the last block is open
])
def test_final_answer_only_from_a_finished_output(text, finish_reason, opened, expected):
    assert final_answer(text, finish_reason, opened) == expected
    verdict = check(text, "#### 7", "gsm8k", finish_reason, opened)
    assert verdict.correct is (expected[1] is None) and verdict.unfinished == expected[1]


def test_a_prompt_that_opens_the_thinking_is_recognised():
    assert opens_thinking("<|im_start|>assistant\n<think>\n")
    assert not opens_thinking("<|im_start|>assistant\n") and not opens_thinking("<think>\n\n</think>\n\n")
