"""reward_model: a Bradley-Terry reward model on the preference pairs (TRL's RewardTrainer).

    python -m stages.reward_model    # params: reward_model.*, prompt.*
                                     # output: models/reward/, metrics/reward_model.json

A one-logit sequence-classification head over reward_model.model (base or SFT), LoRA or full; with
LoRA the adapter is merged, so models/reward is a standalone checkpoint. Metrics: pairwise accuracy
and mean margin on the held-out pairs.
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.launch import enter_launch, is_main_process
from mathpipe.training.reward_model import RewardStageConfig, run_reward_model

log = logging.getLogger("stages.reward_model")


def main() -> None:
    cfg = load_section("reward_model", RewardStageConfig)
    prompt = load_section("prompt", PromptConfig)
    enter_launch(cfg.launch, "stages.reward_model", "reward_model.launch", cfg.ddp_timeout())
    summary = run_reward_model(cfg, chat_template_kwargs=prompt.chat_template_kwargs)
    if not is_main_process():
        return
    write_json(cfg.metrics, summary)
    held = summary["held_out"]
    log.info("%s: held-out pairwise accuracy %.3f, mean margin %.3f over %d pairs", cfg.out_dir,
             held["accuracy"], held["mean_margin"], held["pairs"])


if __name__ == "__main__":
    run_stage(main)
