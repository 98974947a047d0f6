"""base_model: build (tiny, default) or fetch (hub, pinned revision) the model to start from.

    python -m stages.base_model       # params: base_model.*   output: models/base/, metrics/base_model.json
"""

import logging

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.io import write_json
from mathpipe.training.base_model import BaseModelConfig, build_base_model

log = logging.getLogger("stages.base_model")


def main() -> None:
    cfg = load_section("base_model", BaseModelConfig)
    summary = build_base_model(cfg)
    write_json(cfg.metrics, summary)
    log.info("%s: %s (%s), %d parameters", cfg.out_dir, summary["model_id"], summary["revision"], summary["parameters"])


if __name__ == "__main__":
    run_stage(main)
