"""sft: supervised fine-tuning with LoRA (or full) on chat records, TRL's SFTTrainer.

    python -m stages.sft                  # params: sft.*, prompt.*   output: models/sft_adapter/, metrics/sft.json
    python -m stages.sft --section rft    # rejection-sampling fine-tuning: rft.* -> models/rft_adapter/ ...

The rft section is an SFT section too: the merged SFT model trained again on rejection sampling's
best.jsonl (its own verified answers), so RFT compares with DPO and GRPO on the same run. Trainer
checkpoints live in <section>.checkpoint_dir (git-ignored, not a DVC output): re-running after an
interruption resumes from the last one. Loss curves go to <section>.live_dir (dvc plots show).
"""

import argparse
import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.launch import enter_launch, is_main_process
from mathpipe.training.sft import SFTStageConfig, run_sft

log = logging.getLogger("stages.sft")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", default="sft", help="the params.yaml section to train with (sft, rft)")
    section = parser.parse_args().section
    cfg = load_section(section, SFTStageConfig)
    prompt = load_section("prompt", PromptConfig)
    enter_launch(cfg.launch, "stages.sft", f"{section}.launch", cfg.ddp_timeout())
    summary = run_sft(cfg, prefix=section, chat_template_kwargs=prompt.chat_template_kwargs)
    if not is_main_process():
        return
    write_json(cfg.metrics, summary)
    log.info("%s: %d steps, %.0f tokens/s, train loss %.4f, eval loss %s", cfg.out_dir, summary["steps"],
             summary["tokens_per_second"] or 0, summary["train_loss"] or float("nan"), summary["eval_loss"])


if __name__ == "__main__":
    run_stage(main)
