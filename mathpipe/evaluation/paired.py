"""Paired comparison of two models on the same questions: did B beat A, or is it noise?

    a = per_question(read_jsonl("data/predictions/sft/gsm8k.jsonl"))    # question id -> score
    b = per_question(read_jsonl("data/predictions/grpo/gsm8k.jsonl"))
    result = compare(a, b)
    result["difference"], result["ci95_low"], result["ci95_high"], result["p_value"]
    result["fixed"], result["broken"]     # questions B gets right that A got wrong, and the reverse

A question's score is the share of its sampled answers that are right (1 or 0 with one greedy
answer). The difference is B's accuracy minus A's on the questions both answered; its 95% interval
comes from the per-question differences (a normal interval: the benchmarks have hundreds of
questions). The p-value: with one answer per question on both sides, McNemar's exact test (the
binomial test of the fixed against the broken questions, computed exactly with integers); with
sampled answers, the paired z-test of the per-question differences.

Why no statistics package: the exact test is a sum of binomial coefficients and the interval a
normal quantile (the standard library's `statistics.NormalDist`); scipy would add 35 MB to every
install for two functions, statsmodels that and pandas' weight again.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from statistics import NormalDist

from mathpipe.errors import DataError

ALPHA = 0.05  # a difference is called significant below this p-value
Z95 = NormalDist().inv_cdf(0.975)


def per_question(predictions: list[dict], source: str = "predictions") -> dict[str, float]:
    """Question id -> share of its answers that are right, from an evaluation's prediction rows."""
    right: dict[str, list[bool]] = defaultdict(list)
    for i, row in enumerate(predictions):
        if "id" not in row or "correct" not in row:
            raise DataError(f"{source}: row {i + 1} has no 'id' or 'correct' (a prediction file of the evaluate stage)")
        right[str(row["id"])].append(bool(row["correct"]))
    if not right:
        raise DataError(f"{source}: no predictions")
    return {qid: sum(v) / len(v) for qid, v in right.items()}


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split at least this uneven of the discordant
    questions if each were as likely to go either way (a fair coin, fixed + broken tosses)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(fixed, broken) + 1))
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def compare(a: dict[str, float], b: dict[str, float], name_a: str = "a", name_b: str = "b") -> dict:
    """B against A on the questions both answered (the same ids; anything else is an error)."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise DataError(f"{name_a} and {name_b} answered different questions: {len(only_a)} only in {name_a} "
                        f"({', '.join(only_a[:3])}...), {len(only_b)} only in {name_b} ({', '.join(only_b[:3])}...); "
                        "a paired comparison needs the same questions")
    ids = sorted(a)
    n = len(ids)
    diffs = [b[q] - a[q] for q in ids]
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n)
    fixed = [q for q in ids if b[q] > a[q]]
    broken = [q for q in ids if b[q] < a[q]]
    binary = all(v in (0.0, 1.0) for v in (*a.values(), *b.values()))
    if binary:
        test, p = "mcnemar_exact", mcnemar_exact(len(fixed), len(broken))
    elif sd == 0:
        test, p = "paired_z", 1.0 if mean == 0 else 0.0
    else:
        test, p = "paired_z", 2 * (1 - NormalDist().cdf(abs(mean) / (sd / math.sqrt(n))))
    return {
        "a": name_a, "b": name_b, "n": n,
        "accuracy_a": sum(a.values()) / n, "accuracy_b": sum(b.values()) / n,
        "difference": mean, "ci95_low": mean - half, "ci95_high": mean + half,
        "p_value": p, "test": test, "significant": p < ALPHA,
        # with sampled answers: the questions whose share of right answers rose or fell
        "fixed": fixed, "broken": broken,
    }


def verdict(result: dict) -> str:
    """One phrase for a comparison: which way, and whether it is more than noise."""
    if not result["significant"]:
        return "no significant difference"
    return f"{result['b']} {'better' if result['difference'] > 0 else 'worse'} (p < {ALPHA:g})"
