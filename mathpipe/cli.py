"""Entry-point helper shared by the stage modules: logging set-up and clean errors.

    if __name__ == "__main__":
        run_stage(main)

A `PipelineError` (bad input) prints `error: <message>` and exits with status 2, no traceback; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from mathpipe.errors import PipelineError

EXIT_BAD_INPUT = 2


def setup_logging() -> None:
    level = os.environ.get("MATHPIPE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def run_stage(main: Callable[[], object]) -> None:
    setup_logging()
    try:
        main()
    except PipelineError as e:
        logging.getLogger("mathpipe").debug("bad input", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
