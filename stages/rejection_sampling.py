"""rejection_sampling: best-of-N samples of the SFT model, scored by the reward model and the verifier.

    python -m stages.rejection_sampling    # params: rejection_sampling.*, prompt.*

Writes data/rejection/ (samples.jsonl: every sample with its reward and verdict; best.jsonl: the
selected sample per prompt as an SFT record; pairs_train/val.jsonl: chosen vs rejected, DPO's
default pairs) and metrics/rejection_sampling.json (pass@1, pass@N, reward-selected accuracy, AUC,
prompts kept, samples per second).
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.prompts import PromptConfig
from mathpipe.training.rejection_sampling import RejectionConfig, run_rejection_sampling, write_outputs

log = logging.getLogger("stages.rejection_sampling")


def main() -> None:
    cfg = load_section("rejection_sampling", RejectionConfig)
    prompt = load_section("prompt", PromptConfig)
    result = run_rejection_sampling(cfg, prompt.chat_template_kwargs)
    write_outputs(result, cfg.out_dir)
    write_json(cfg.metrics, result.metrics)
    log.info("wrote %s (%d samples, %d best-of-N records, %d + %d pairs)", cfg.out_dir, len(result.samples),
             len(result.best), len(result.pairs_train), len(result.pairs_val))


if __name__ == "__main__":
    run_stage(main)
