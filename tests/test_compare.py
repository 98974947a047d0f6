"""`python -m mathpipe.tools.compare A B`: two prediction files with known flips, the counts and the
McNemar p-value as computed by hand, and the changed questions listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mathpipe.io import write_jsonl
from tests.checkout import ROOT


def predictions(right: set[int], n: int = 20) -> list[dict]:
    return [{"id": f"gsm8k-test-{i}", "sample": 0, "question": f"What is {i} + 1?", "gold": str(i + 1),
             "extracted": str(i + 1) if i in right else "0", "correct": i in right} for i in range(n)]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mathpipe.tools.compare", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_known_flips_give_the_hand_computed_counts_and_p_value(tmp_path):
    # A right on 0..9, B right on 3..15: B fixes 10..15 (6) and breaks 0..2 (3); 7 of 20 unchanged.
    write_jsonl(tmp_path / "a.jsonl", predictions(set(range(10))))
    write_jsonl(tmp_path / "b.jsonl", predictions(set(range(3, 16))))
    result = run(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert (summary["fixed"], summary["broken"], summary["n"]) == (6, 3, 20)
    # exact McNemar by hand: 2 * P(X <= 3), X ~ Bin(9, 1/2) = 2 * (1 + 9 + 36 + 84) / 512
    assert abs(summary["p_value"] - 260 / 512) < 1e-12 and summary["test"] == "mcnemar_exact"
    assert abs(summary["difference"] - 0.15) < 1e-12 and not summary["significant"]
    assert ": +15.0 points" in lines[0] and "6 fixed, 3 broken, n = 20: no significant difference" in lines[0]
    listed = [line for line in lines if line.startswith(("+ ", "- "))]
    assert len(listed) == 9 and listed[0].startswith("+ gsm8k-test-10: 0.00 -> 1.00  '0' -> '11' (gold '11')")
    assert sum(line.startswith("- ") for line in listed) == 3


def test_files_over_different_questions_are_one_error(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", predictions(set(), n=5))
    write_jsonl(tmp_path / "b.jsonl", predictions(set(), n=4))
    result = run(str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert result.returncode == 2 and "answered different questions: 1 only in" in result.stderr
    missing = run(str(tmp_path / "a.jsonl"), str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "prediction file not found" in missing.stderr
