"""sample_data: write the embedded default data set, in the real OpenR1 / GSM8K / CMATH schemas.

    python -m stages.sample_data      # params: sample.*   output: data/raw/sample/
"""

import logging
from pathlib import Path

from mathpipe.cli import run_stage
from mathpipe.config import load_section
from mathpipe.data.sample_data import SAMPLE_DIR, SampleConfig, write_sample_data

log = logging.getLogger("stages.sample_data")


def main() -> None:
    cfg = load_section("sample", SampleConfig)
    counts = write_sample_data(Path(SAMPLE_DIR), cfg)
    for name, rows in counts.items():
        log.info("%s: %d rows", name, rows)


if __name__ == "__main__":
    run_stage(main)
