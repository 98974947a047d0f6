"""Decontamination: which training problems are benchmark questions in disguise.

    index = BenchmarkIndex({"gsm8k": questions, "cmath": more}, n=8)
    index.matches("Janet's ducks lay 16 eggs per day ...")    # ["gsm8k-test-0"]: the same problem
    index.shares_ngram("...")                                 # open-r1's plain test: any 8-gram in common

Text is normalised first (Unicode NFKC, lower case, punctuation and spacing dropped, each CJK character
a word, each number a word), then cut into word n-grams, as open-r1's decontamination does. Plain
n-gram overlap cannot tell a shared template from a shared problem: templated word problems share
long phrases ("how many pencils does emma have now") while their numbers differ. So a training
problem is the same problem as a benchmark question when

- at least `min_coverage` of the question's n-grams occur in it (a copy with another prefix, case or
  spacing keeps nearly all of them), and
- its numbers, from where the question's text begins in it, are the question's, in order (a
  problem is its numbers: a template with other numbers, or the question with one more step and its
  number, is another problem; a leading "3. (5 points)" is not part of the problem).

A question too short for one n-gram is compared whole (its normalised words inside the problem's).
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable

_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\d_]+|\d+(?:\.\d+)?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CJK_SPLIT = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def words(text: str) -> list[str]:
    """Normalised words: NFKC, lower case; runs of letters, single CJK characters, numbers."""
    text = unicodedata.normalize("NFKC", text).lower().replace(",", "")  # 1,000 is 1000
    out = []
    for token in _WORD.findall(text):
        # a run of letters may hold CJK characters after Latin ones: each CJK character is a word
        out += [part for part in _CJK_SPLIT.split(token) if part]
    return out


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


class BenchmarkIndex:
    """The benchmark questions' n-grams, to test training problems against them."""

    def __init__(self, questions: dict[str, Iterable[tuple[str, str]]], n: int = 8, min_coverage: float = 0.8):
        """questions: benchmark -> (question id, text)."""
        self.n, self.min_coverage = n, min_coverage
        self.grams: dict[str, set] = {}  # question id -> its n-grams
        self.words: dict[str, list[str]] = {}
        self.benchmark: dict[str, str] = {}
        self.index: dict[tuple, set[str]] = defaultdict(set)
        self.short: list[str] = []  # questions with fewer than n words
        for benchmark, rows in questions.items():
            for qid, text in rows:
                tokens = words(text)
                self.words[qid], self.benchmark[qid] = tokens, benchmark
                grams = ngrams(tokens, n)
                self.grams[qid] = grams
                if not grams:
                    self.short.append(qid)
                for gram in grams:
                    self.index[gram].add(qid)

    def _candidates(self, grams: set) -> dict[str, int]:
        shared: dict[str, int] = defaultdict(int)
        for gram in grams:
            for qid in self.index.get(gram, ()):
                shared[qid] += 1
        return shared

    def shares_ngram(self, text: str) -> list[str]:
        """Questions with at least one n-gram in common with `text` (open-r1's criterion)."""
        return self.check(text)[0]

    def matches(self, text: str) -> list[str]:
        """Questions that `text` is a copy of, by the criterion above."""
        return self.check(text)[1]

    def check(self, text: str) -> tuple[list[str], list[str]]:
        """(questions sharing an n-gram with `text`, questions `text` is a copy of), normalising once."""
        tokens = words(text)
        shared = self._candidates(ngrams(tokens, self.n))
        found = [qid for qid, count in shared.items() if count >= self.min_coverage * len(self.grams[qid])]
        joined = f" {' '.join(tokens)} "
        found += [qid for qid in self.short if self.words[qid] and f" {' '.join(self.words[qid])} " in joined]
        return sorted(shared), sorted(qid for qid in found if self._same_numbers(qid, tokens))

    def _same_numbers(self, qid: str, problem: list[str]) -> bool:
        """The problem's numbers from where the question starts in it to its end are the question's:
        a leading "3. (5 points)" is allowed, an extra step with its own numbers is another problem."""
        question = self.words[qid]
        grams = self.grams[qid] or {tuple(question)}
        width = self.n if self.grams[qid] else len(question)
        start = next((i for i in range(len(problem)) if tuple(problem[i:i + width]) in grams), 0)
        return _numbers(problem[start:]) == _numbers(question)


def _numbers(tokens: list[str]) -> list[str]:
    return [t for t in tokens if _NUMBER.fullmatch(t)]
