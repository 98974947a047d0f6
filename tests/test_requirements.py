"""The pinned environments: the CUDA lock resolves against the registry for the platform it is for,
and both locks hold the versions requirements.txt asks for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SET = ["requirements-torch.txt", "requirements.txt", "requirements-vllm-cuda.txt", "requirements-dev.txt"]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s#;]+)")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if match := PIN.match(line.strip()):
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def test_the_cuda_lock_is_what_the_cuda_requirements_resolve_to_on_linux_x86_64():
    """Against the package registry (CI reaches it): a requirement that no longer resolves on a GPU
    machine, or a lock not re-made after a change (`make lock`), fails here, not on the GPU."""
    uv = Path(sys.executable).with_name("uv")
    done = subprocess.run([str(uv), "pip", "compile", "--quiet", "--python-version", "3.11", "--python-platform",
                           "x86_64-manylinux_2_28", "--no-header", "--no-annotate", *CUDA_SET,
                           "--constraint", "requirements-cuda.lock"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the CUDA set does not resolve:\n{done.stderr[-3000:]}"
    resolved = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in (line.split("==", 1) for line in done.stdout.split()
                                                                    if "==" in line)}
    assert resolved == pins(ROOT / "requirements-cuda.lock"), "requirements-cuda.lock is stale: run make lock"


@pytest.mark.parametrize("lock", ["requirements-cpu.lock", "requirements-cuda.lock"])
def test_each_lock_holds_the_versions_the_requirements_pin(lock):
    locked = pins(ROOT / lock)
    flavour = "cpu" if "cpu" in lock else "cuda"
    for requirements in ("requirements.txt", "requirements-torch.txt", "requirements-dev.txt",
                         f"requirements-vllm-{flavour}.txt"):
        for name, version in pins(ROOT / requirements).items():
            found = (locked.get(name) or "").split("+")[0]  # torch 2.13.0+cpu is 2.13.0, the CPU build
            assert found == version, f"{lock}: {name} {locked.get(name)}, {requirements} asks {version}"


def test_the_cuda_lock_pins_the_pre_releases_pip_would_not_pick():
    locked = pins(ROOT / "requirements-cuda.lock")
    assert locked["antlr4-python3-runtime"] == "4.13.2"  # math-verify[antlr4_13_2]
    assert "rc" in locked["hydra-core"] and "rc" in locked["omegaconf"]  # the only ones beside antlr 4.13 under dvc


def test_a_pin_outside_trls_declared_vllm_range_is_stated_in_the_readme():
    import inspect

    from trl import import_utils

    low, high = re.search(r'Version\("([\d.]+)"\) <= _vllm_base_version <= Version\("([\d.]+)"\)',
                          inspect.getsource(import_utils.is_vllm_available)).groups()
    pinned = pins(ROOT / "requirements-vllm-cuda.txt")["vllm"]
    inside = tuple(map(int, low.split("."))) <= tuple(map(int, pinned.split("."))) <= tuple(map(int, high.split(".")))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    statement = f"supports vLLM {low} to {high}"
    assert inside or (statement in readme and f"vLLM {pinned}" in readme), (
        f"vllm {pinned} is outside TRL's {low}..{high}: say so in the README's Environment section")
    assert not (inside and statement in readme), "the README states a deviation that is gone"
