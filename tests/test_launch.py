"""Launching training through accelerate: one plain process by default, accelerate launch for more."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
import yaml

from mathpipe.devices import CudaReport, require_gpus
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.training import launch
from mathpipe.training.launch import LaunchSettings
from mathpipe.training.sft import SFTStageConfig
from tests.params import param_config, params_with

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_one_process_stays_a_plain_process(monkeypatch):
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.setattr(launch.os, "execve", lambda *a: pytest.fail("relaunched a one-process stage"))
    launch.relaunch_under_accelerate(param_config(LaunchSettings, "sft.launch", num_processes=1), "stages.sft", "sft.launch")


def test_more_processes_replace_the_stage_with_accelerate_launch(monkeypatch):
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    calls = []
    monkeypatch.setattr(launch.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setattr(launch.sys, "argv", ["stages/sft.py", "--section", "rft"])
    settings = param_config(LaunchSettings, "sft.launch", num_processes=4, config_file="configs/accelerate/multi_gpu.yaml")
    launch.relaunch_under_accelerate(settings, "stages.sft", "rft.launch")
    (path, argv, env), = calls
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    "configs/accelerate/multi_gpu.yaml", "--num_processes", "4", "-m", "stages.sft",
                    "--section", "rft"]  # each worker trains the same section
    assert env[launch.LAUNCHED_ENV] == "4"  # the workers must not launch again


@pytest.mark.parametrize("env", [launch.LAUNCHED_ENV, "LOCAL_RANK"])
def test_a_worker_does_not_launch_again(monkeypatch, env):
    monkeypatch.setenv(env, "0")
    monkeypatch.setattr(launch.os, "execve", lambda *a: pytest.fail("a worker launched again"))
    launch.relaunch_under_accelerate(param_config(LaunchSettings, "sft.launch", num_processes=2), "stages.sft", "sft.launch")


def test_a_launch_that_started_too_few_workers_stops(monkeypatch):
    monkeypatch.setenv(launch.LAUNCHED_ENV, "2")
    monkeypatch.setattr(launch, "distributed_state", lambda *timeout: SimpleNamespace(num_processes=1))
    with pytest.raises(PipelineError, match=r"sft.launch: accelerate started 1 process\(es\), not 2"):
        launch.check_world_size(param_config(LaunchSettings, "sft.launch", num_processes=2), "sft.launch")


@pytest.mark.parametrize("raw, message", [
    ({"num_processes": 0}, r"sft.launch.num_processes: must be > 0"),
    ({"num_processes": 2, "config_file": "configs/accelerate/nope.yaml"},
     r"sft.launch.config_file: accelerate config not found: configs/accelerate/nope.yaml"),
])
def test_bad_launch_params_name_their_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        param_config(SFTStageConfig, "sft", **{"launch": raw})


@pytest.mark.parametrize("name", ["cpu_ddp", "multi_gpu", "fsdp", "zero3", "multi_node"])
def test_every_shipped_config_is_one_accelerate_reads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert config.distributed_type.value == raw["distributed_type"] and config.num_processes >= 2


def test_the_cpu_config_launches_workers_with_torchrun():
    """accelerate's MULTI_CPU launcher needs mpirun; MULTI_GPU uses torchrun, which works on CPUs."""
    raw = yaml.safe_load((ROOT / "configs/accelerate/cpu_ddp.yaml").read_text())
    assert raw["distributed_type"] == "MULTI_GPU" and raw["use_cpu"] is False


@pytest.mark.parametrize("name, asks", [
    ("single", None), ("cpu_ddp", None), ("multi_gpu", "gpu_ids: all"), ("multi_node", "gpu_ids: all"),
    ("fsdp", "distributed_type: FSDP"), ("zero3", "distributed_type: DEEPSPEED"),
])
def test_a_launch_config_says_whether_it_asks_for_gpus(name, asks):
    assert launch.gpus_asked(ROOT / "configs" / "accelerate" / f"{name}.yaml") == asks


def test_bf16_mixed_precision_asks_for_gpus_and_use_cpu_does_not(tmp_path):
    config = tmp_path / "launch.yaml"
    config.write_text("distributed_type: MULTI_GPU\nmixed_precision: bf16\n")
    assert launch.gpus_asked(config) == "mixed_precision: bf16"
    config.write_text("distributed_type: MULTI_GPU\nmixed_precision: bf16\nuse_cpu: true\n")
    assert launch.gpus_asked(config) is None


OLD_DRIVER = CudaReport(torch="2.13.0", torch_cuda="13.0", driver_needed="580.65.06", driver_found="550.54.15",
                        usable=False, gpus=0)


def test_gpus_a_machine_cannot_give_are_refused_with_the_versions_found_and_needed():
    with pytest.raises(ConfigError) as error:
        require_gpus(8, "sft.launch.config_file multi_gpu.yaml (gpu_ids: all)", OLD_DRIVER)
    assert ("sft.launch.config_file multi_gpu.yaml (gpu_ids: all) asks for GPUs, but CUDA is not usable here: torch "
            "2.13.0 built for CUDA 13.0, which needs an NVIDIA driver >= 580.65.06; found: driver 550.54.15") in str(error.value)
    two = CudaReport(torch="2.13.0", torch_cuda="13.0", driver_needed="580.65.06", driver_found="580.82", usable=True,
                     gpus=2)
    with pytest.raises(ConfigError, match=r"asks for 8 processes, one per GPU, but torch sees 2 GPU"):
        require_gpus(8, "sft.launch.config_file multi_gpu.yaml", two)
    require_gpus(2, "sft.launch.config_file multi_gpu.yaml", two)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the refusal is for a machine without CUDA")
def test_a_multi_gpu_launch_on_a_machine_without_cuda_stops_before_anything_is_written(tmp_path):
    params = params_with({"sft": {"launch": {"num_processes": 2,
                                             "config_file": str(ROOT / "configs/accelerate/multi_gpu.yaml")}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "stages.sft"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "sft.launch.config_file" in errors[0] and "CUDA is not usable here" in errors[0]
    assert "torch " in errors[0] and "found: " in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no model, checkpoint, log or metrics


def test_the_first_process_group_gets_the_stages_ddp_timeout(monkeypatch):
    import accelerate

    made = []
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: made.append(kwargs) or SimpleNamespace(num_processes=1))
    cfg = param_config(SFTStageConfig, "sft", **{"train": {**param_config(SFTStageConfig, "sft").train, "ddp_timeout": 7200}})
    launch.check_world_size(cfg.launch, "sft.launch", cfg.ddp_timeout())
    assert made[0]["timeout"] == timedelta(seconds=7200)
    assert param_config(SFTStageConfig, "sft").ddp_timeout() == 1800  # TRL's default when params.yaml says nothing
