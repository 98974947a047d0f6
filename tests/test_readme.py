"""README.md is a manual: its results table is the committed report's, copied by `make report`."""

from __future__ import annotations

from pathlib import Path

import pytest

from mathpipe.errors import DataError
from mathpipe.evaluation.report import results_part
from mathpipe.tools.readme import BEGIN, END, with_results

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_committed_results_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = results_part((ROOT / "metrics/report.md").read_text(encoding="utf-8"))
    assert with_results(readme, table) == readme, "README.md's results differ from metrics/report.md: run make report"


def test_the_table_is_replaced_between_the_markers_only():
    readme = f"intro\n{BEGIN}\n| old |\n|---|\n| 1 |\n{END}\nrest\n"
    assert with_results(readme, "| a |\n|---|\n| 2 |") == f"intro\n{BEGIN}\n| a |\n|---|\n| 2 |\n{END}\nrest\n"
    with pytest.raises(DataError, match="markers are missing"):
        with_results("no markers", "| a |")
    with pytest.raises(DataError, match="no results table"):
        results_part("**sft**\n")
    report = "| a |\n|---|\n| 2 |\n\n**Did each stage help?** ...\n\n| b |\n\n**sft**\n\n| figure | value |\n"
    assert results_part(report) == "| a |\n|---|\n| 2 |\n\n**Did each stage help?** ...\n\n| b |"
