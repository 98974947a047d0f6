"""evaluate: exact-answer accuracy of one model on one benchmark, by greedy generation.

    python -m stages.evaluate --model base --benchmark gsm8k

Reads models/<model>/ and data/prepared/eval/<benchmark>.jsonl; writes the per-sample predictions to
data/predictions/<model>/<benchmark>.jsonl and metrics/eval/<model>/<benchmark>.json (accuracy,
n, correct, 95% Wilson interval and the config that produced them). dvc.yaml runs it for every
model x benchmark.
"""

import argparse
import logging
from pathlib import Path

from mathpipe import prompts
from mathpipe.cli import run_stage
from mathpipe.config import from_dict, load_params
from mathpipe.errors import ConfigError
from mathpipe.evaluation import EvaluateConfig, evaluate
from mathpipe.generation import make_generator
from mathpipe.io import read_jsonl, write_json, write_jsonl
from mathpipe.models import read_origin, require_model_dir

log = logging.getLogger("stages.evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a name from evaluate.models (a folder under models_dir)")
    parser.add_argument("--benchmark", required=True, help="a name from evaluate.benchmarks")
    args = parser.parse_args()

    cfg = from_dict(EvaluateConfig, load_params().get("evaluate"), "evaluate")
    if args.model not in cfg.models:
        raise ConfigError(f"--model {args.model}: not in evaluate.models {cfg.models}")
    if args.benchmark not in cfg.benchmarks:
        raise ConfigError(f"--benchmark {args.benchmark}: not in evaluate.benchmarks {cfg.benchmarks}")
    model_dir = require_model_dir(Path(cfg.models_dir) / args.model)
    rows = read_jsonl(Path(cfg.eval_dir) / f"{args.benchmark}.jsonl", required=("id", "question", "gold"))
    if cfg.max_samples is not None:
        rows = rows[: cfg.max_samples]

    generator = make_generator(str(model_dir), cfg.engine)
    try:
        result = evaluate(generator, rows, cfg.generation, cfg.template)
    finally:
        generator.close()
    origin = read_origin(model_dir)
    result.metrics["config"] = {
        "model": args.model,
        "model_id": origin.get("model_id"),
        "revision": origin.get("revision"),
        "benchmark": args.benchmark,
        "prompt_template": cfg.template,
        "prompt_template_hash": prompts.template_hash(generator.tokenizer, cfg.template),
        "backend": generator.name,
        "max_new_tokens": cfg.generation.max_new_tokens,
        "temperature": cfg.generation.temperature,
        "seed": cfg.generation.seed,
    }
    write_jsonl(Path(cfg.predictions_dir) / args.model / f"{args.benchmark}.jsonl", result.predictions)
    write_json(Path(cfg.metrics_dir) / args.model / f"{args.benchmark}.json", result.metrics)
    m = result.metrics
    log.info("%s on %s: accuracy %.3f (%d/%d, 95%% CI %.3f-%.3f)", args.model, args.benchmark,
             m["accuracy"], m["correct"], m["n"], m["ci95_low"], m["ci95_high"])


if __name__ == "__main__":
    run_stage(main)
