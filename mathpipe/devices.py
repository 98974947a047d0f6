"""What this machine's GPUs can do, said the same way everywhere: the CUDA that torch was built for,
the NVIDIA driver that CUDA needs, the driver found, and the GPUs torch sees.

    python -m mathpipe.devices        # make setup prints it on a GPU machine
    require_gpus(8, "sft.launch.config_file configs/accelerate/multi_gpu.yaml (gpu_ids: all)")

A torch wheel built for a newer CUDA than the driver supports imports fine and reports
`torch.cuda.is_available() == False`; left alone, a GPU profile then trains on the CPU for hours.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mathpipe.errors import ConfigError

# The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA compatibility guide, "minor
# version compatibility": a CUDA 12.x build runs on any driver >= 525.60.13, a 13.x build on >= 580).
DRIVER_NEEDED = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
DRIVER_FILE = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class CudaReport:
    torch: str
    torch_cuda: str | None  # the CUDA torch was built for (None: a CPU build)
    driver_needed: str | None
    driver_found: str | None  # None: no NVIDIA driver answered
    usable: bool  # torch.cuda.is_available()
    gpus: int  # torch.cuda.device_count()

    def describe(self) -> str:
        built = f"built for CUDA {self.torch_cuda}" if self.torch_cuda else "a CPU build (no CUDA)"
        needs = f", which needs an NVIDIA driver >= {self.driver_needed}" if self.driver_needed else ""
        found = f"driver {self.driver_found}" if self.driver_found else "no NVIDIA driver"
        state = f"{self.gpus} GPU(s) usable" if self.usable else "CUDA not usable"
        return f"torch {self.torch} {built}{needs}; found: {found}; {state}"


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version, from /proc or nvidia-smi; None when there is none."""
    if DRIVER_FILE.is_file():
        found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", DRIVER_FILE.read_text(errors="replace"))
        if found:
            return found.group(1)
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    versions = done.stdout.split()
    return versions[0] if done.returncode == 0 and versions else None


def cuda_report() -> CudaReport:
    import torch

    built = torch.version.cuda
    major = int(built.split(".")[0]) if built else None
    usable = torch.cuda.is_available()
    return CudaReport(torch=torch.__version__, torch_cuda=built, driver_needed=DRIVER_NEEDED.get(major),
                      driver_found=driver_version(), usable=usable, gpus=torch.cuda.device_count() if usable else 0)


def require_gpus(count: int, asked_by: str, report: CudaReport | None = None) -> None:
    """Stop, before any work, when `asked_by` wants `count` GPUs and this machine cannot give them."""
    report = report or cuda_report()
    if not report.usable:
        raise ConfigError(f"{asked_by} asks for GPUs, but CUDA is not usable here: {report.describe()}. "
                          "Install a driver that new (or torch built for an older CUDA), or run on CPUs "
                          "with a CPU launch config (configs/accelerate/cpu_ddp.yaml)")
    if report.gpus < count:
        raise ConfigError(f"{asked_by} asks for {count} processes, one per GPU, but torch sees {report.gpus} "
                          f"GPU(s) ({report.describe()}); lower num_processes or check CUDA_VISIBLE_DEVICES")


def main() -> int:
    report = cuda_report()
    print(f"CUDA: {report.describe()}")
    print(asdict(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
