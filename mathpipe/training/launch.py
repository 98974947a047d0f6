"""Several training processes through `accelerate launch`; one plain process by default.

    cfg = load_section("sft", SFTStageConfig)
    enter_launch(cfg.launch, "stages.sft", "sft.launch")   # returns at once when num_processes is 1
    state = distributed_state()          # accelerate's PartialState: rank, device, barriers

A training stage starts as `python -m stages.<stage>` (dvc.yaml). When `<stage>.launch.num_processes`
is above 1 it replaces itself with

    python -m accelerate.commands.launch --config_file <launch.config_file> --num_processes N -m stages.<stage>

so accelerate starts the workers (DDP over gloo on CPUs, NCCL DDP, FSDP or DeepSpeed, as the config
file says) and DVC sees one command whose exit status is the workers'. Each worker runs the stage
again, finds MATHPIPE_LAUNCHED in its environment, and trains.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from mathpipe.config import check, check_positive
from mathpipe.errors import PipelineError

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


def enter_launch(settings: LaunchSettings, module: str, prefix: str) -> None:
    """At the top of a training stage: relaunch under accelerate when the params ask for several
    processes (this call then never returns), else check this run has the process count asked for."""
    relaunch_under_accelerate(settings, module, prefix)
    check_world_size(settings, prefix)


def relaunch_under_accelerate(settings: LaunchSettings, module: str, prefix: str) -> None:
    """Replace this process with `accelerate launch` when the params ask for several processes."""
    if settings.num_processes == 1 or inside_launch():
        return
    command = launch_command(settings, module)
    log.info("%s.num_processes is %d: %s", prefix, settings.num_processes, " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, {**os.environ, LAUNCHED_ENV: str(settings.num_processes)})


def distributed_state():
    """accelerate's PartialState: one per process, shared with the Trainer the stage creates.

    cpu=True without CUDA: workers started by torchrun then join over gloo (MULTI_CPU).
    """
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return distributed_state().is_main_process


def check_world_size(settings: LaunchSettings, prefix: str) -> None:
    """Stop when the launch gave another process count than the params ask for."""
    world = distributed_state().num_processes
    if world == settings.num_processes:
        return
    if LAUNCHED_ENV in os.environ:  # our own launch: the config file's launcher did not start the workers
        raise PipelineError(f"{prefix}: accelerate started {world} process(es), not {settings.num_processes}, with "
                            f"{settings.config_file}; on CPUs use a config whose distributed_type is MULTI_GPU "
                            "(as configs/accelerate/cpu_ddp.yaml does: torchrun workers, gloo), since accelerate "
                            "starts MULTI_CPU workers through mpirun")
    log.warning("%s.num_processes is %d but this run has %d process(es) (started by hand?)", prefix,
                settings.num_processes, world)
