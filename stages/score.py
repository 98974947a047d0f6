"""Score a file of model outputs against a benchmark's gold answers.

    python -m stages.score --benchmark gsm8k --input predictions.jsonl [--output verdicts.jsonl]

Each input row holds `prediction` (the model's output text) and the gold answer in the benchmark's
own field (`answer` for gsm8k and math, `golden` for cmath), and optionally `finish_reason`
(`length`: the output has no final answer). The last line of stdout is one JSON object,
`{"accuracy": 0.75, "n": 4, "correct": 3}`; `--output` also writes every input row with
`extracted`, `gold_answer`, `unfinished` and `correct` added. Bad input prints `error: <message>` and exits
with status 2.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from mathpipe.answers import BENCHMARKS, check
from mathpipe.cli import run_stage
from mathpipe.errors import DataError
from mathpipe.io import iter_jsonl, write_jsonl


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stages.score", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--input", required=True, type=Path, help="jsonl rows with `prediction` and the gold field"
    )
    parser.add_argument("--output", type=Path, help="write per-row verdicts here (jsonl)")
    return parser.parse_args(argv)


def score_rows(rows: Iterator[dict], benchmark: str) -> Iterator[dict]:
    """Each row with its verdict added."""
    gold_field = BENCHMARKS[benchmark]
    for row in rows:
        # A row that says it stopped on length (evaluate's predictions do) has no final answer.
        verdict = check(str(row["prediction"]), str(row[gold_field]), benchmark, row.get("finish_reason") or "stop")
        verdict_fields = {"extracted": verdict.extracted, "gold_answer": verdict.gold, "unfinished": verdict.unfinished}
        yield {**row, **verdict_fields, "correct": verdict.correct}


def summarise(verdicts: list[dict]) -> dict:
    correct = sum(v["correct"] for v in verdicts)
    return {"accuracy": correct / len(verdicts), "n": len(verdicts), "correct": correct}


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    rows = iter_jsonl(args.input, required=["prediction", BENCHMARKS[args.benchmark]])
    verdicts = list(score_rows(rows, args.benchmark))
    if not verdicts:
        raise DataError(f"{args.input}: no rows to score (the file is empty)")
    if args.output is not None:
        write_jsonl(args.output, verdicts)
    summary = summarise(verdicts)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    run_stage(main)  # a PipelineError prints `error: <message>` and exits 2, without a traceback
