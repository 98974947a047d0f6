"""`python -m stages.score`: accuracy on the last stdout line, per-row verdicts, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_score(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.score", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_rows(path: Path, rows: list[dict]) -> Path:
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def summary(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


GSM8K_ROWS = [
    {"prediction": "She sells 9 eggs for $2 each.\n#### 18", "answer": "9 * 2 = 18\n#### 18"},
    {"prediction": "The answer is $1,000.00.", "answer": "...\n#### 1,000"},
    {"prediction": "<think>7?</think>\\boxed{-3}", "answer": "#### -3"},
    {"prediction": "I think it is 12, maybe 13", "answer": "#### 12"},
    {"prediction": "no idea", "answer": "#### 5"},
]


def test_gsm8k_accuracy_and_verdicts(tmp_path):
    source = write_rows(tmp_path / "preds.jsonl", GSM8K_ROWS)
    out = tmp_path / "out" / "verdicts.jsonl"
    result = run_score("--benchmark", "gsm8k", "--input", source, "--output", out)
    assert summary(result) == {"accuracy": 0.6, "n": 5, "correct": 3}

    verdicts = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(verdicts) == len(GSM8K_ROWS)
    assert [v["correct"] for v in verdicts] == [True, True, True, False, False]
    assert [v["extracted"] for v in verdicts] == ["18", "1,000.00", "-3", "13", None]
    assert [v["gold_answer"] for v in verdicts] == ["18", "1,000", "-3", "12", "5"]
    assert all(v["prediction"] == row["prediction"] for v, row in zip(verdicts, GSM8K_ROWS))


def test_an_unfinished_prediction_scores_no_answer(tmp_path):
    rows = [{"prediction": "<think>3 + 4 = 7", "answer": "#### 7"},  # thinking never closed
            {"prediction": "\\boxed{7}", "answer": "#### 7", "finish_reason": "length"},  # cut off
            {"prediction": "\\boxed{7}", "answer": "#### 7", "finish_reason": "stop"}]
    out = tmp_path / "verdicts.jsonl"
    assert summary(run_score("--benchmark", "gsm8k", "--input", write_rows(tmp_path / "p.jsonl", rows),
                             "--output", out))["correct"] == 1
    verdicts = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [v["unfinished"] for v in verdicts] == ["open_thinking", "length", None]


def test_cmath_reads_the_golden_field(tmp_path):
    rows = [
        {"question": "q1", "prediction": "3+4=7，7+5=12。答案是 12", "golden": "12"},
        {"question": "q2", "prediction": "答案：4分之3", "golden": "3/4"},
        {"question": "q3", "prediction": "答案是 40", "golden": "40%"},
        {"question": "q4", "prediction": "一共36个，每人12个。答案是 36", "golden": "12"},
    ]
    result = run_score("--benchmark", "cmath", "--input", write_rows(tmp_path / "p.jsonl", rows))
    assert summary(result) == {"accuracy": 0.75, "n": 4, "correct": 3}


def test_math_uses_math_verify_for_latex(tmp_path):
    rows = [
        {"prediction": "So $\\boxed{2\\sqrt{3}}$.", "answer": "\\sqrt{12}"},
        {"prediction": "\\boxed{(1, 2)}", "answer": "(1,2)"},
        {"prediction": "\\boxed{x^2+2}", "answer": "x^2+1"},
    ]
    result = run_score("--benchmark", "math", "--input", write_rows(tmp_path / "p.jsonl", rows))
    assert summary(result) == {"accuracy": 2 / 3, "n": 3, "correct": 2}


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error: " in result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_malformed_line_names_file_and_line(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps(GSM8K_ROWS[0]) + "\n{not json\n", encoding="utf-8")
    assert_clean_error(run_score("--benchmark", "gsm8k", "--input", source), f"{source}:2")


@pytest.mark.parametrize(
    ("benchmark", "row", "field"),
    [
        ("gsm8k", {"prediction": "#### 1", "golden": "1"}, "'answer'"),
        ("cmath", {"prediction": "1", "answer": "1"}, "'golden'"),
        ("math", {"answer": "1"}, "'prediction'"),
    ],
)
def test_missing_field_names_file_line_and_field(tmp_path, benchmark, row, field):
    source = write_rows(tmp_path / "rows.jsonl", [row])
    assert_clean_error(run_score("--benchmark", benchmark, "--input", source), f"{source}:1", field)


def test_empty_input_is_a_clear_error(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_text("\n", encoding="utf-8")
    out = tmp_path / "verdicts.jsonl"
    result = run_score("--benchmark", "gsm8k", "--input", source, "--output", out)
    assert_clean_error(result, str(source), "empty")
    assert not out.exists()


def test_missing_input_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert_clean_error(run_score("--benchmark", "cmath", "--input", missing), str(missing))


def test_unknown_benchmark_is_a_usage_error(tmp_path):
    source = write_rows(tmp_path / "p.jsonl", GSM8K_ROWS)
    result = run_score("--benchmark", "mmlu", "--input", source)
    assert result.returncode == 2
    assert "mmlu" in result.stderr and "gsm8k" in result.stderr
    assert "Traceback" not in result.stderr
