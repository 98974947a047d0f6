"""Compare two prediction files question by question: the paired difference, its 95% interval, the
p-value, and the questions that changed.

    python -m mathpipe.tools.compare data/predictions/sft/gsm8k.jsonl data/predictions/grpo/gsm8k.jsonl
    make compare A=data/predictions/sft/gsm8k.jsonl B=data/predictions/grpo/gsm8k.jsonl

Two experiments' predictions: DVC keeps each experiment's outputs in its cache, so get the file of
each one, then compare them:

    dvc exp show                                               # the experiments' names
    dvc get . data/predictions/grpo/gsm8k.jsonl --rev <exp> -o /tmp/grpo-exp.jsonl
    python -m mathpipe.tools.compare data/predictions/grpo/gsm8k.jsonl /tmp/grpo-exp.jsonl

Prints the comparison, then one line per changed question (`+` fixed by B, `-` broken by B: id,
both answers, the gold answer, the question); the last line is the comparison as JSON. A file
that is not a prediction file, or two files over different questions, is an error naming it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.evaluation.paired import compare, per_question, verdict
from mathpipe.io import read_jsonl, require_file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mathpipe.tools.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", help="prediction file of model A (the one trained from)")
    parser.add_argument("b", help="prediction file of model B, over the same questions")
    parser.add_argument("--max-listed", type=int, default=50, help="changed questions to list (default 50)")
    return parser.parse_args(argv)


def describe(result: dict) -> str:
    return (f"{result['b']} - {result['a']}: {100 * result['difference']:+.1f} points "
            f"(95% CI {100 * result['ci95_low']:+.1f} to {100 * result['ci95_high']:+.1f}), "
            f"p = {result['p_value']:.3g} ({result['test']}), {len(result['fixed'])} fixed, "
            f"{len(result['broken'])} broken, n = {result['n']}: {verdict(result)}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rows = {name: read_jsonl(require_file(path, "prediction file")) for name, path in (("a", args.a), ("b", args.b))}
    a, b = per_question(rows["a"], args.a), per_question(rows["b"], args.b)
    result = compare(a, b, Path(args.a).as_posix(), Path(args.b).as_posix())
    print(describe(result))
    first = {name: {str(r["id"]): r for r in reversed(rs)} for name, rs in rows.items()}  # a question's first answer
    changed = [("+", q) for q in result["fixed"]] + [("-", q) for q in result["broken"]]
    for sign, qid in changed[: args.max_listed]:
        ra, rb = first["a"][qid], first["b"][qid]
        question = " ".join(str(ra.get("question", "")).split())[:80]
        print(f"{sign} {qid}: {a[qid]:.2f} -> {b[qid]:.2f}  {ra.get('extracted')!r} -> {rb.get('extracted')!r} "
              f"(gold {ra.get('gold')!r})  {question}")
    if len(changed) > args.max_listed:
        print(f"... and {len(changed) - args.max_listed} more (--max-listed)")
    print(json.dumps({k: v for k, v in result.items() if k not in ("fixed", "broken")}
                     | {"fixed": len(result["fixed"]), "broken": len(result["broken"])}))


if __name__ == "__main__":
    run_stage(main)
