"""Exact-answer evaluation by generation: prompts from the registry, answers from the checker.

    result = evaluate(generator, rows, settings, template="boxed")
    result.metrics   # {"accuracy": 0.62, "n": 200, "correct": 124, "ci95_low": ..., ...}
    result.predictions   # one dict per question: question, gold, output, extracted, correct
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from mathpipe import answers, prompts
from mathpipe.config import check, check_positive
from mathpipe.generation import EngineSettings, GenerationSettings, Generator


@dataclass
class EvaluateConfig:
    models: list[str] = field(default_factory=lambda: ["base"])
    benchmarks: list[Literal["gsm8k", "cmath"]] = field(default_factory=lambda: ["gsm8k", "cmath"])
    models_dir: str = "models"
    eval_dir: str = "data/prepared/eval"
    predictions_dir: str = "data/predictions"
    metrics_dir: str = "metrics/eval"
    template: str = prompts.DEFAULT_TEMPLATE
    max_samples: int | None = None
    engine: EngineSettings = field(default_factory=EngineSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def validate(self, prefix: str) -> None:
        check(bool(self.models), f"{prefix}.models", "must name at least one model")
        if self.max_samples is not None:
            check_positive(self.max_samples, f"{prefix}.max_samples")
        check(self.generation.n == 1, f"{prefix}.generation.n", "evaluation scores one completion per question")
        prompts.instruction(self.template)


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (well-behaved at 0 and 1, unlike Wald)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # min/max with p: at p = 0 or 1 rounding can leave the bound a hair inside (0.9999999999999999).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclass
class EvalResult:
    metrics: dict
    predictions: list[dict]


def evaluate(generator: Generator, rows: list[dict], settings: GenerationSettings, template: str) -> EvalResult:
    """rows: {"id", "question", "gold"} as written by prepare."""
    rendered = [prompts.render_prompt(generator.tokenizer, r["question"], template) for r in rows]
    outputs = generator.generate(rendered, settings)
    predictions = []
    for row, prompt, (completion,) in zip(rows, rendered, outputs):
        extracted, unfinished = answers.final_answer(completion.text, completion.finish_reason,
                                                     answers.opens_thinking(prompt))
        predictions.append(
            {
                "id": row["id"],
                "question": row["question"],
                "gold": row["gold"],
                "output": completion.text,
                "extracted": extracted,
                "correct": unfinished is None and answers.is_equivalent(extracted, row["gold"]),
                "num_tokens": completion.num_tokens,
                "finish_reason": completion.finish_reason,
                "unfinished": unfinished,  # why there is no final answer: length, open_thinking
            }
        )
    n = len(predictions)
    correct = sum(p["correct"] for p in predictions)
    low, high = wilson_interval(correct, n)
    metrics = {
        "accuracy": correct / n if n else 0.0,
        "n": n,
        "correct": correct,
        "ci95_low": round(low, 6),
        "ci95_high": round(high, 6),
        "answer_found_rate": sum(p["extracted"] is not None for p in predictions) / n if n else 0.0,
        # stopped before finishing: on the token limit, or with the thinking still open
        "truncated_rate": sum(p["unfinished"] is not None for p in predictions) / n if n else 0.0,
        "mean_output_tokens": sum(p["num_tokens"] for p in predictions) / n if n else 0.0,
    }
    return EvalResult(metrics=metrics, predictions=predictions)
