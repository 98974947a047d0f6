"""The GPU check (mathpipe.tools.gpu_check) run on this CPU with the tiny model: every check of the
CUDA path runs through the pipeline's code in bf16 and reports; the GPU machine runs the same."""

from __future__ import annotations

import json

import pytest

from mathpipe.tools.gpu_check import main

pytestmark = pytest.mark.rehearsal  # minutes: CI runs it with the rehearsal (make test-rehearsal)


def test_the_gpu_check_runs_every_check_in_bf16_and_writes_its_report(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "gpu_check.json"
    assert main(["--device", "cpu", "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    checks = {c["check"]: c for c in report["checks"]}
    assert list(checks) == ["data", "sft_bf16_step", "reward_model_bf16_step", "dpo_bf16_step", "grpo_bf16_step",
                            "merge_bf16", "weight_sync_drift", "generation"]
    assert report["passed"] and all(c["passed"] for c in checks.values()), report
    for name in ("sft_bf16_step", "reward_model_bf16_step", "dpo_bf16_step", "grpo_bf16_step"):
        assert checks[name]["details"]["trainable_dtype"] == "float32" and checks[name]["details"]["steps"] == 2
    drift = checks["weight_sync_drift"]["details"]
    assert drift["pipeline_out_of_place"]["tensors_changed"] == 0 < drift["trl_in_place"]["tensors_changed"]
    assert report["versions"]["libraries"]["trl"] and "torch" in report["versions"]["cuda"]


def test_the_gpu_check_on_a_machine_without_cuda_says_so(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--device", "cuda", "--out", str(tmp_path / "check.json")]) == 2
    assert "the GPU check (--device cuda) asks for GPUs, but CUDA is not usable here" in capsys.readouterr().err
