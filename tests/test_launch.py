"""Launching training through accelerate: one plain process by default, accelerate launch for more."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import yaml

from mathpipe.errors import ConfigError, PipelineError
from mathpipe.training import launch
from mathpipe.training.launch import LaunchSettings
from mathpipe.training.sft import SFTStageConfig
from tests.params import param_config

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
    monkeypatch.setattr(launch, "distributed_state", lambda: SimpleNamespace(num_processes=1))
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
