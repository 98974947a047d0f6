"""prepare: OpenR1 shards (and optionally GSM8K) -> SFT records and preference pairs; GSM8K and CMATH
test sets -> evaluation sets. Row counts after each filter go to metrics/prepare.json.

    python -m stages.prepare          # params: prepare.*, prompt.*   output: data/prepared/
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.data.prepare import PrepareConfig, resolve_inputs, run_prepare
from mathpipe.io import write_json
from mathpipe.models import load_tokenizer
from mathpipe.prompts import PromptConfig

log = logging.getLogger("stages.prepare")


def main() -> None:
    cfg = load_section("prepare", PrepareConfig)
    prompt = load_section("prompt", PromptConfig)
    inputs = resolve_inputs(cfg)
    tokenizer = load_tokenizer(cfg.tokenizer)
    counts = run_prepare(cfg, tokenizer, inputs, prompt.chat_template_kwargs)
    write_json(cfg.metrics, counts)
    log.info("wrote %s: %s", cfg.out_dir, counts)


if __name__ == "__main__":
    run_stage(main)
