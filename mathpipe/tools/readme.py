"""Keep the README's results table the one the report stage wrote, by construction.

    python -m mathpipe.tools.readme          # make report runs it: README.md's table <- metrics/report.md

The results sit in README.md between two markers; this copies the top of metrics/report.md (the
accuracy table and the paired comparisons) in between, so the README never shows figures the committed run did not
produce. tests/test_readme.py fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mathpipe.errors import DataError
from mathpipe.evaluation.report import results_part

BEGIN, END = "<!-- results: copied from metrics/report.md by `make report` -->", "<!-- end of results -->"


def with_results(readme: str, table: str) -> str:
    """readme with the text between the markers replaced by table."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise DataError(f"README.md: the results markers are missing ({BEGIN} ... {END})")
    return readme[: start + len(BEGIN)] + "\n" + table + "\n" + readme[end:]


def main(readme: str = "README.md", report: str = "metrics/report.md") -> int:
    path = Path(readme)
    text = path.read_text(encoding="utf-8")
    updated = with_results(text, results_part(Path(report).read_text(encoding="utf-8")))
    if updated != text:
        path.write_text(updated, encoding="utf-8")
        print(f"{readme}: results table updated from {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
