"""dpo: preference optimisation with LoRA on the merged SFT model (TRL's DPOTrainer).

    python -m stages.dpo      # params: dpo.*, prompt.*   output: models/dpo_adapter/, metrics/dpo.json

The reference is the SFT model itself (the adapter switched off). dpo.pairs picks the pairs:
prepare's (format trl), or an external set such as argilla/distilabel-math-preference-dpo
(format distilabel) or xinlai/Math-Step-DPO-10K (format math_step_dpo), local or from the Hub.
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.dpo import DPOStageConfig, run_dpo
from mathpipe.training.launch import enter_launch, is_main_process

log = logging.getLogger("stages.dpo")


def main() -> None:
    cfg = load_section("dpo", DPOStageConfig)
    prompt = load_section("prompt", PromptConfig)
    enter_launch(cfg.launch, "stages.dpo", "dpo.launch", cfg.ddp_timeout())
    summary = run_dpo(cfg, chat_template_kwargs=prompt.chat_template_kwargs)
    if not is_main_process():
        return
    write_json(cfg.metrics, summary)
    held = summary["held_out"]
    log.info("%s: held-out reward accuracy %s, margin %s", cfg.out_dir, held["reward_accuracy"], held["reward_margin"])


if __name__ == "__main__":
    run_stage(main)
