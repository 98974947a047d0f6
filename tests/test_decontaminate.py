"""Decontamination (mathpipe.data.decontaminate): a copy of a benchmark question is found whatever
its case, spacing or leading numbering; a templated sibling with other numbers, or the question with
one more step, is another problem."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mathpipe.data.decontaminate import BenchmarkIndex, words

QUESTION = "Mia has 5 bags with 5 pencils in each bag. She gives away 7 pencils. How many pencils does Mia have now?"
CMATH = "小明有3本故事书，后来小明的故事书变成了之前的4倍。小明现在一共有多少本故事书？"


def index() -> BenchmarkIndex:
    return BenchmarkIndex({"gsm8k": [("gsm8k-test-0", QUESTION)], "cmath": [("cmath-test-0", CMATH)]}, n=8)


def test_words_are_normalised():
    assert words("Janet’s  DUCKS lay 1,600 eggs.") == ["janet", "s", "ducks", "lay", "1600", "eggs"]
    assert words("小明有3本") == ["小", "明", "有", "3", "本"]


def test_a_copy_is_found_whatever_its_case_spacing_or_numbering():
    idx = index()
    assert idx.matches(QUESTION) == ["gsm8k-test-0"]
    assert idx.matches("  " + QUESTION.upper().replace(" ", "\n ")) == ["gsm8k-test-0"]
    assert idx.matches("3. (5 points) " + QUESTION + " Put the answer in \\boxed{}.") == ["gsm8k-test-0"]
    assert idx.matches(CMATH.replace("，", ", ")) == ["cmath-test-0"]


def test_the_same_template_with_other_numbers_or_one_more_step_is_another_problem():
    idx = index()
    sibling = QUESTION.replace("5 bags", "4 bags").replace("7 pencils", "3 pencils")
    assert idx.matches(sibling) == [] and idx.shares_ngram(sibling) == ["gsm8k-test-0"]  # plain 8-grams: a false hit
    assert idx.matches(QUESTION.replace(" How many", " Then she buys 2 more. How many")) == []
    assert idx.matches("Tom has 5 bags with 5 apples in each bag. How many apples does Tom have now?") == []


@given(st.text(max_size=200))
def test_any_text_is_checked_without_error(text):
    assert set(index().matches(text)) <= {"gsm8k-test-0", "cmath-test-0"}
