"""evaluate: exact-answer accuracy of one model on every benchmark, greedy (or avg@n, maj@n, pass@n sampled).

    python -m stages.evaluate --model sft                      # every benchmark of evaluate.benchmarks
    python -m stages.evaluate --model sft --benchmark gsm8k    # one of them
    python -m stages.evaluate --model sft --sampled            # evaluate.sampled: avg@n at the policy's temperature

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
from mathpipe.config import load_section
from mathpipe.errors import ConfigError
from mathpipe.evaluation.evaluate import EvaluateConfig, evaluate_model, sampled_view
from mathpipe.io import write_json, write_jsonl

log = logging.getLogger("stages.evaluate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a name from evaluate.models (a folder under models_dir)")
    parser.add_argument("--benchmark", action="append",
                        help="a name from evaluate.benchmarks (repeatable; default: all of them)")
    parser.add_argument("--sampled", action="store_true",
                        help="evaluate.sampled's models, benchmarks and sampling settings, files under its subdir")
    args = parser.parse_args()
    cfg = load_section("evaluate", EvaluateConfig)
    section = "evaluate.sampled" if args.sampled else "evaluate"
    if args.sampled:
        cfg = sampled_view(cfg)
    kwargs = load_section("prompt", prompts.PromptConfig).chat_template_kwargs
    if args.model not in cfg.models:
        raise ConfigError(f"--model {args.model}: not in {section}.models {cfg.models}")
    for name in args.benchmark or []:
        if name not in cfg.benchmarks:
            raise ConfigError(f"--benchmark {name}: not in {section}.benchmarks {cfg.benchmarks}")

    results = evaluate_model(cfg, args.model, args.benchmark or cfg.benchmarks, kwargs)
    for name, result in results.items():
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
