"""sft: supervised fine-tuning with LoRA (or full) on the prepared chat records, TRL's SFTTrainer.

    python -m stages.sft      # params: sft.*, prompt.*   output: models/sft_adapter/, metrics/sft.json

Trainer checkpoints live in checkpoints/sft (git-ignored, not a DVC output): re-running after an
interruption resumes from the last one. Loss curves go to dvclive/sft (dvc plots show).
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.launch import enter_launch, is_main_process
from mathpipe.prompts import PromptConfig
from mathpipe.sft import SFTStageConfig, run_sft

log = logging.getLogger("stages.sft")


def main() -> None:
    cfg = load_section("sft", SFTStageConfig)
    prompt = load_section("prompt", PromptConfig, optional=True)
    enter_launch(cfg.launch, "stages.sft", "sft.launch")
    summary = run_sft(cfg, chat_template_kwargs=prompt.chat_template_kwargs)
    if not is_main_process():
        return
    write_json("metrics/sft.json", summary)
    log.info("%s: %d steps, %.0f tokens/s, train loss %.4f, eval loss %s", cfg.out_dir, summary["steps"],
             summary["tokens_per_second"] or 0, summary["train_loss"] or float("nan"), summary["eval_loss"])


if __name__ == "__main__":
    run_stage(main)
