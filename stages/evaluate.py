"""evaluate: exact-answer accuracy of one model on every benchmark, greedy (or avg@n, maj@n, pass@n sampled).

    python -m stages.evaluate --model sft                      # every benchmark of evaluate.benchmarks
    python -m stages.evaluate --model sft --benchmark gsm8k    # one of them

Reads models/<model>/ and data/prepared/eval/<benchmark>.jsonl; writes the per-sample predictions to
data/predictions/<model>/<benchmark>.jsonl and metrics/eval/<model>/<benchmark>.json (accuracy,
n, correct, 95% Wilson interval and the config that produced them). dvc.yaml runs it once per
model: the model is loaded (and the engine started) once, and every benchmark's questions are
generated in one batch.
"""

import argparse
import logging
from pathlib import Path

from mathpipe import prompts
from mathpipe.cli import run_stage
from mathpipe.config import from_dict, load_params, load_section
from mathpipe.errors import ConfigError, DataError
from mathpipe.evaluation import EvaluateConfig, evaluate_benchmarks
from mathpipe.generation import make_generator
from mathpipe.io import read_jsonl, write_json, write_jsonl
from mathpipe.models import read_origin, require_model_dir

log = logging.getLogger("stages.evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a name from evaluate.models (a folder under models_dir)")
    parser.add_argument("--benchmark", action="append",
                        help="a name from evaluate.benchmarks (repeatable; default: all of them)")
    args = parser.parse_args()

    cfg = from_dict(EvaluateConfig, load_params().get("evaluate"), "evaluate")
    kwargs = load_section("prompt", prompts.PromptConfig, optional=True).chat_template_kwargs
    if args.model not in cfg.models:
        raise ConfigError(f"--model {args.model}: not in evaluate.models {cfg.models}")
    for name in args.benchmark or []:
        if name not in cfg.benchmarks:
            raise ConfigError(f"--benchmark {name}: not in evaluate.benchmarks {cfg.benchmarks}")
    model_dir = require_model_dir(Path(cfg.models_dir) / args.model)
    # Every question file is read (and checked) before the model is loaded.
    benchmarks = {}
    for name in args.benchmark or cfg.benchmarks:
        path = Path(cfg.eval_dir) / f"{name}.jsonl"
        rows = read_jsonl(path, required=("id", "question", "gold"))
        if not rows:
            raise DataError(f"{path}: no questions (the file is empty): a benchmark of 0 questions measures nothing")
        benchmarks[name] = rows[: cfg.max_samples] if cfg.max_samples is not None else rows

    generator = make_generator(str(model_dir), cfg.engine)
    try:
        results = evaluate_benchmarks(generator, benchmarks, cfg.generation, cfg.template, kwargs)
    finally:
        generator.close()
    origin = read_origin(model_dir)
    config = {
        "model": args.model,
        "model_id": origin.get("model_id"),
        "revision": origin.get("revision"),
        "benchmark": None,  # set per benchmark below (the key keeps its place in the file)
        "prompt_template": cfg.template,
        "prompt_template_hash": prompts.template_hash(generator.tokenizer, cfg.template, kwargs),
        "chat_template_kwargs": kwargs,
        "backend": generator.name,
        "max_new_tokens": cfg.generation.max_new_tokens,
        "temperature": cfg.generation.temperature,
        "top_p": cfg.generation.top_p,
        "top_k": cfg.generation.top_k,
        "samples_per_question": cfg.generation.n,
        "seed": cfg.generation.seed,
    }
    for name, result in results.items():
        result.metrics["config"] = {**config, "benchmark": name}
        write_jsonl(Path(cfg.predictions_dir) / args.model / f"{name}.jsonl", result.predictions)
        write_json(Path(cfg.metrics_dir) / args.model / f"{name}.json", result.metrics)
        m = result.metrics
        log.info("%s on %s: accuracy %.3f (%d/%d, 95%% CI %.3f-%.3f)", args.model, name,
                 m["accuracy"], m["correct"], m["n"], m["ci95_low"], m["ci95_high"])
        if "maj_at_n" in m:
            log.info("%s on %s: maj@%d %.3f, pass@%d %.3f over %d questions", args.model, name,
                     m["samples_per_question"], m["maj_at_n"], m["samples_per_question"], m["pass_at_n"],
                     m["questions"])


if __name__ == "__main__":
    run_stage(main)
