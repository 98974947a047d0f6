"""Several training processes through `accelerate launch`; one plain process by default.

    cfg = load_section("sft", SFTStageConfig)
    enter_launch(cfg.launch, "stages.sft", "sft.launch", cfg.ddp_timeout())   # returns at once when num_processes is 1
    state = distributed_state()          # accelerate's PartialState: rank, device, barriers

A training stage starts as `python -m stages.<stage>` (dvc.yaml). When `<stage>.launch.num_processes`
is above 1 it replaces itself with

    python -m accelerate.commands.launch --config_file <launch.config_file> --num_processes N -m stages.<stage>

so accelerate starts the workers (DDP over gloo on CPUs, NCCL DDP, FSDP or DeepSpeed, as the config
file says) and DVC sees one command whose exit status is the workers'. Each worker runs the stage
again, finds MATHPIPE_LAUNCHED in its environment, and trains.

A launch config that asks for GPUs (gpu_ids, bf16 or fp16 mixed precision, FSDP, DeepSpeed) on a
machine where CUDA is not usable stops before anything starts, naming the CUDA torch was built for
and the driver found (mathpipe.devices): otherwise the workers would fall back to the CPU and train
there for hours.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from mathpipe.config import check, check_positive
from mathpipe.devices import require_gpus
from mathpipe.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LaunchSettings:
    num_processes: int  # 1: a plain process; more: accelerate launch with config_file
    config_file: str  # configs/accelerate/: cpu_ddp, multi_gpu, fsdp, zero3, ...

    def validate(self, prefix: str) -> None:
        check_positive(self.num_processes, f"{prefix}.num_processes")
        if self.num_processes > 1:
            check(Path(self.config_file).is_file(), f"{prefix}.config_file",
                  f"accelerate config not found: {self.config_file} (see configs/accelerate/)")


LAUNCHED_ENV = "MATHPIPE_LAUNCHED"  # set for the workers, so they never launch again


def inside_launch() -> bool:
    """True in a worker started by relaunch_under_accelerate, accelerate launch or torchrun."""
    return LAUNCHED_ENV in os.environ or "LOCAL_RANK" in os.environ


def launch_command(settings: LaunchSettings, module: str, arguments: list[str] | None = None) -> list[str]:
    """The workers get the stage's own command-line arguments (`stages.sft --section rft`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", settings.config_file,
            "--num_processes", str(settings.num_processes), "-m", module,
            *(sys.argv[1:] if arguments is None else arguments)]


GPU_DISTRIBUTED_TYPES = ("FSDP", "DEEPSPEED", "MEGATRON_LM")
GPU_MIXED_PRECISION = ("bf16", "fp16", "fp8")


def gpus_asked(config_file: str | Path) -> str | None:
    """What in an accelerate config asks for GPUs (its words), or None when it runs on CPUs too.
    configs/accelerate/cpu_ddp.yaml says MULTI_GPU for its launcher, so distributed_type alone does not tell."""
    try:
        config = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{config_file}: not YAML ({e})") from None
    if config.get("use_cpu") is True:
        return None
    if config.get("distributed_type") in GPU_DISTRIBUTED_TYPES:
        return f"distributed_type: {config['distributed_type']}"
    if "gpu_ids" in config:
        return f"gpu_ids: {config['gpu_ids']}"
    if str(config.get("mixed_precision", "no")) in GPU_MIXED_PRECISION:
        return f"mixed_precision: {config['mixed_precision']}"
    return None


def check_devices(settings: LaunchSettings, prefix: str) -> None:
    """Stop when the launch config asks for GPUs this machine cannot give (see mathpipe.devices)."""
    if settings.num_processes == 1:
        return
    reason = gpus_asked(settings.config_file)
    if reason is not None:
        require_gpus(settings.num_processes, f"{prefix}.config_file {settings.config_file} ({reason})")


def enter_launch(settings: LaunchSettings, module: str, prefix: str, ddp_timeout: int | None = None) -> None:
    """At the top of a training stage: check the machine has the GPUs the launch config asks for,
    relaunch under accelerate when the params ask for several processes (this call then never
    returns), else check this run has the process count asked for. `ddp_timeout` (seconds; the
    stage's train.ddp_timeout) bounds every collective, from the first."""
    if not inside_launch():
        check_devices(settings, prefix)
    relaunch_under_accelerate(settings, module, prefix)
    check_world_size(settings, prefix, ddp_timeout)


def relaunch_under_accelerate(settings: LaunchSettings, module: str, prefix: str) -> None:
    """Replace this process with `accelerate launch` when the params ask for several processes."""
    if settings.num_processes == 1 or inside_launch():
        return
    command = launch_command(settings, module)
    log.info("%s.num_processes is %d: %s", prefix, settings.num_processes, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, {**os.environ, LAUNCHED_ENV: str(settings.num_processes)})


def distributed_state(ddp_timeout: int | None = None):
    """accelerate's PartialState: one per process, shared with the Trainer the stage creates. The
    first call sets up the process group, so it is the one whose `ddp_timeout` (seconds) holds: the
    Trainer's own later comes too late.

    cpu=True without CUDA: workers started by torchrun then join over gloo (MULTI_CPU).
    """
    import torch
    from accelerate import PartialState

    timeout = {"timeout": timedelta(seconds=ddp_timeout)} if ddp_timeout else {}
    return PartialState(cpu=not torch.cuda.is_available(), **timeout)


def is_main_process() -> bool:
    return distributed_state().is_main_process


def check_world_size(settings: LaunchSettings, prefix: str, ddp_timeout: int | None = None) -> None:
    """Stop when the launch gave another process count than the params ask for."""
    world = distributed_state(ddp_timeout).num_processes
    if world == settings.num_processes:
        return
    if LAUNCHED_ENV in os.environ:  # our own launch: the config file's launcher did not start the workers
        raise PipelineError(f"{prefix}: accelerate started {world} process(es), not {settings.num_processes}, with "
                            f"{settings.config_file}; on CPUs use a config whose distributed_type is MULTI_GPU "
                            "(as configs/accelerate/cpu_ddp.yaml does: torchrun workers, gloo), since accelerate "
                            "starts MULTI_CPU workers through mpirun")
    log.warning("%s.num_processes is %d but this run has %d process(es) (started by hand?)", prefix,
                settings.num_processes, world)
