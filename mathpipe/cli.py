"""Entry-point helper shared by the stage modules: logging set-up and clean errors.

    if __name__ == "__main__":
        run_stage(main)

A `PipelineError` (bad input) prints `error: <message>` and exits with status 2, no traceback; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mathpipe.errors import PipelineError

EXIT_BAD_INPUT = 2
FIGURES_ENV = "MATHPIPE_STAGE_FIGURES"


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
    started, status = time.monotonic(), 1
    try:
        main()
        status = 0
    except PipelineError as e:
        logging.getLogger("mathpipe").debug("bad input", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        status = EXIT_BAD_INPUT
        sys.exit(EXIT_BAD_INPUT)
    finally:
        record_figures(time.monotonic() - started, status)


def record_figures(seconds: float, status: int) -> None:
    """With MATHPIPE_STAGE_FIGURES set (make rehearse sets it), append this stage's wall time and peak
    memory to that file, one JSON line per stage process."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    import resource

    mib = 1024  # ru_maxrss is in KiB on Linux
    record = {
        "stage": " ".join([Path(sys.argv[0]).stem, *sys.argv[1:]]),
        "exit_status": status,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib),
        # engine and launcher processes this one waited for: the largest of them, not their sum
        "largest_child_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
