"""`python -m stages.evaluate --model M`: one process (one engine) answers every benchmark, and a bad
question file stops it before the model is loaded, with nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from mathpipe.io import read_jsonl, write_jsonl
from tests.params import params_with

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = {
    "gsm8k": [{"id": f"g{i}", "question": f"Tom has {i} apples and buys 2 more. How many now?", "gold": str(i + 2)}
              for i in range(3)],
    "cmath": [{"id": f"c{i}", "question": f"小明有{i}本书，又买了3本，现在有几本？", "gold": str(i + 3)}
              for i in range(2)],
}


def project(tmp_path: Path, model_dir: Path) -> Path:
    for name, rows in QUESTIONS.items():
        write_jsonl(tmp_path / "eval" / f"{name}.jsonl", rows)
    params = params_with({"evaluate": {
        "models": [model_dir.name], "benchmarks": ["gsm8k", "cmath"], "models_dir": str(model_dir.parent),
        "eval_dir": "eval", "predictions_dir": "predictions", "metrics_dir": "metrics",
        "engine": {"backend": "transformers"},
        "generation": {"max_new_tokens": 8, "temperature": 0.0},
    }})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return tmp_path


def run_evaluate(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.evaluate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_one_run_answers_every_benchmark(tmp_path, tiny_model_dir):
    cwd = project(tmp_path, tiny_model_dir)
    result = run_evaluate(cwd, "--model", tiny_model_dir.name)
    assert result.returncode == 0, result.stderr
    for name, rows in QUESTIONS.items():
        predictions = read_jsonl(cwd / "predictions" / tiny_model_dir.name / f"{name}.jsonl")
        assert [p["id"] for p in predictions] == [r["id"] for r in rows]
        metrics = json.loads((cwd / "metrics" / tiny_model_dir.name / f"{name}.json").read_text())
        assert metrics["n"] == len(rows)
        assert metrics["correct"] == sum(p["correct"] for p in predictions)
        assert metrics["config"]["benchmark"] == name
        assert metrics["config"]["backend"] == "transformers"
    assert result.stderr.count("accuracy") == 2  # one line per benchmark


def test_benchmark_option_picks_one(tmp_path, tiny_model_dir):
    cwd = project(tmp_path, tiny_model_dir)
    result = run_evaluate(cwd, "--model", tiny_model_dir.name, "--benchmark", "cmath")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (cwd / "metrics" / tiny_model_dir.name).iterdir()) == ["cmath.json"]


def test_a_bad_question_file_stops_before_any_output(tmp_path, tiny_model_dir):
    cwd = project(tmp_path, tiny_model_dir)
    write_jsonl(cwd / "eval" / "cmath.jsonl", [{"id": "c0", "question": "小明有几本书？"}])  # no gold
    result = run_evaluate(cwd, "--model", tiny_model_dir.name)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "eval/cmath.jsonl" in errors[0] and "gold" in errors[0], result.stderr
    assert not (cwd / "predictions").exists() and not (cwd / "metrics").exists()  # gsm8k was not run either


def test_unknown_benchmark_is_named(tmp_path, tiny_model_dir):
    cwd = project(tmp_path, tiny_model_dir)
    result = run_evaluate(cwd, "--model", tiny_model_dir.name, "--benchmark", "math")
    assert result.returncode == 2
    assert "--benchmark math: not in evaluate.benchmarks" in result.stderr


def test_an_empty_question_file_is_an_error_not_a_benchmark_of_0(tmp_path, tiny_model_dir):
    cwd = project(tmp_path, tiny_model_dir)
    (cwd / "eval" / "gsm8k.jsonl").write_text("", encoding="utf-8")
    result = run_evaluate(cwd, "--model", tiny_model_dir.name)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: eval/gsm8k.jsonl: no questions (the file is empty): a benchmark of 0 questions "
                      "measures nothing"], result.stderr
    assert not (cwd / "predictions").exists() and not (cwd / "metrics").exists()
