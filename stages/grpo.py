"""grpo: online RL on the merged SFT model, rewarded by the answer checker (TRL's GRPOTrainer).

    python -m stages.grpo     # params: grpo.*, prompt.*   output: models/grpo_adapter/, metrics/grpo.json

Each step samples grpo.train.num_generations completions per training prompt and reinforces those
whose reward (grpo.rewards.weights: accuracy against the gold answer, format, overlong shaping) beats
their group's mean. grpo.train takes GRPOConfig's own argument names.
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.grpo import GRPOStageConfig, run_grpo
from mathpipe.training.launch import enter_launch, is_main_process

log = logging.getLogger("stages.grpo")


def main() -> None:
    cfg = load_section("grpo", GRPOStageConfig)
    prompt = load_section("prompt", PromptConfig)
    enter_launch(cfg.launch, "stages.grpo", "grpo.launch", cfg.ddp_timeout())
    summary = run_grpo(cfg, chat_template_kwargs=prompt.chat_template_kwargs)
    if not is_main_process():
        return
    write_json(cfg.metrics, summary)
    log.info("%s: reward %.3f -> %.3f over %d steps; %.0f%% of groups had one reward for every completion",
             cfg.out_dir, summary.get("reward_first", 0), summary.get("reward_last", 0), summary["steps"],
             100 * (summary.get("uniform_group_fraction") or 0))


if __name__ == "__main__":
    run_stage(main)
