"""Does GRPO's reward path score the SFT model as rejection sampling does? One pass rate per prompt, two ways.

    python -m mathpipe.tools.reward_parity --out metrics/bench/reward_parity.json

GRPOTrainer, at a learning rate of 1e-12 (an Adam step then moves a weight by about 1e-12, so the
policy stays the SFT model; the stage refuses 0), samples rejection sampling's own
prompts once each (rejection_sampling.max_prompts, prompt_seed), as many completions per prompt, at
the same temperature and token budget, and scores them with GRPO's accuracy reward. Rejection sampling
sampled the same prompts through the pipeline's generation engine and scored them with the checker
that evaluation uses (data/rejection/samples.jsonl). The two per-prompt pass rates are compared as
paired figures (mathpipe.evaluation.paired): a wrong template, a lost end token or a different parser
in the reward path shows as a significant difference; the same path shows as sampling noise.
Run it after `dvc repro rejection_sampling`; it changes no model and writes nothing else.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.config import from_dict, load_params
from mathpipe.data.problems import read_problems
from mathpipe.evaluation.paired import compare, per_question, verdict
from mathpipe.io import read_jsonl, require_file, write_json

MAX_PROMPTS_PER_STEP = 16
FROZEN_LEARNING_RATE = 1e-12


def parity_config(params: dict, work: Path):
    """grpo's section, turned into a measurement: rejection sampling's prompts, policy and sampling,
    a learning rate that changes no weight, no adapter, one pass over the prompts."""
    from mathpipe.training.grpo import GRPOStageConfig

    rs, grpo = params["rejection_sampling"], params["grpo"]
    gen = rs["generation"]
    # TRL's sampler drops an incomplete last batch: prompts per step divide the prompts, so each runs once
    prompts = len(read_problems(rs["prompts_file"], rs["max_prompts"], rs["prompt_seed"], purpose="sample from"))
    per_step = next(k for k in range(min(MAX_PROMPTS_PER_STEP, prompts), 0, -1) if prompts % k == 0)
    steps = prompts // per_step
    train = {**grpo["train"], "learning_rate": FROZEN_LEARNING_RATE, "lr_scheduler_type": "constant",
             "warmup_steps": 0, "num_generations": gen["n"], "per_device_train_batch_size": gen["n"] * per_step,
             "max_steps": steps, "num_iterations": 1, "temperature": gen["temperature"], "top_p": gen["top_p"],
             "top_k": gen["top_k"], "max_completion_length": gen["max_new_tokens"], "save_steps": steps + 1,
             "seed": gen["seed"]}
    raw = {**grpo, "model": rs["policy"], "prompts_file": rs["prompts_file"], "max_prompts": rs["max_prompts"],
           "prompt_seed": rs["prompt_seed"], "template": rs["template"], "lora": None, "train": train,
           "rewards": {**grpo["rewards"], "weights": {"accuracy": 1.0}},
           "out_dir": str(work / "policy"), "checkpoint_dir": str(work / "checkpoints"), "live_dir": str(work / "live"),
           "metrics": str(work / "metrics.json")}
    return from_dict(GRPOStageConfig, raw, "grpo")


def reward_pass_rates(verdicts: list[dict]) -> dict[str, float]:
    """Prompt id -> share of its completions that earned the accuracy reward."""
    rewards: dict[str, list[float]] = defaultdict(list)
    for row in verdicts:
        rewards[row["id"]].append(row["accuracy"])
    return {pid: sum(v) / len(v) for pid, v in rewards.items()}


def parity(params: dict) -> dict:
    from mathpipe.training.grpo import run_grpo

    samples_file = require_file(Path(params["rejection_sampling"]["out_dir"]) / "samples.jsonl",
                                "rejection sampling's samples (dvc repro rejection_sampling)")
    sampled = per_question(read_jsonl(samples_file), str(samples_file))
    verdicts: list = []
    with tempfile.TemporaryDirectory(prefix="reward-parity-") as work:
        cfg = parity_config(params, Path(work))
        run_grpo(cfg, chat_template_kwargs=params["prompt"]["chat_template_kwargs"], verdicts=verdicts)
    rewarded = reward_pass_rates(verdicts)
    result = compare(sampled, rewarded, "rejection_sampling", "grpo_reward")
    return {**result, "pass_rate_rejection_sampling": sum(sampled[q] for q in rewarded) / len(rewarded),
            "pass_rate_grpo_reward": sum(rewarded.values()) / len(rewarded), "prompts": len(rewarded),
            "completions": len(verdicts), "verdict": verdict(result)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mathpipe.tools.reward_parity", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the comparison here as JSON")
    args = parser.parse_args(argv)
    result = parity(load_params())
    print(f"{result['prompts']} prompts, {result['completions']} completions: pass rate "
          f"{result['pass_rate_rejection_sampling']:.3f} (rejection sampling) against "
          f"{result['pass_rate_grpo_reward']:.3f} (GRPO's reward), "
          f"difference {100 * result['difference']:+.1f} points (95% CI "
          f"{100 * result['ci95_low']:+.1f} to {100 * result['ci95_high']:+.1f}), p = {result['p_value']:.3g}: "
          f"{result['verdict']}")
    if args.out:
        write_json(args.out, {k: v for k, v in result.items() if k not in ("fixed", "broken")})


if __name__ == "__main__":
    run_stage(main)
