"""DVC's cache at checkpoint scale: copy against link types, on a synthetic ~1 GB checkpoint.

    make bench-cache                       # = python -m benchmarks.dvc_cache
    python -m benchmarks.dvc_cache --gib 1 --repeats 3 --out metrics/bench/dvc_cache.json

For each `cache.type` (copy, reflink, hardlink, symlink) a fresh git + DVC repository is made next
to this project (same filesystem, as a real cache would be), a safetensors checkpoint of random
float32 weights is written into it, and three things are measured: the seconds `dvc add` takes
(hashing + moving into the cache + linking back), the bytes the workspace and the cache take
together on disk (`du`, which counts a hard-linked file once), and the seconds `dvc checkout`
takes to bring the deleted checkpoint back. Types the filesystem does not support are reported as
such (reflink needs XFS, Btrfs or APFS).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mathpipe.cli import run_stage
from mathpipe.io import write_json

log = logging.getLogger("benchmarks.dvc_cache")
LINK_TYPES = ("copy", "reflink", "hardlink", "symlink")
DVC = str(Path(sys.executable).parent / "dvc")


def sh(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def write_checkpoint(folder: Path, gib: float, seed: int) -> int:
    """A safetensors file of random float32 tensors (random, so nothing below can compress it)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    per_tensor = 64 * 2**20 // 4  # 64 MiB of float32 per tensor
    tensors = {f"layers.{i}.weight": torch.randn(per_tensor, generator=generator)
               for i in range(max(1, round(gib * 2**30 / (per_tensor * 4))))}
    save_file(tensors, folder / "model.safetensors")
    return (folder / "model.safetensors").stat().st_size


def first_error(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    return next((line for line in lines if "ERROR" in line or "WARNING" in line), lines[0] if lines else "no output")


def disk_bytes(path: Path) -> int:
    return int(sh(["du", "-s", "--block-size=1", "."], path).stdout.split()[0])


def measure(link_type: str, gib: float, parent: Path, seed: int) -> dict:
    repo = Path(tempfile.mkdtemp(prefix=f"dvc-cache-{link_type}-", dir=parent))
    try:
        for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "config", "core.analytics", "false"],
                    [DVC, "config", "cache.type", link_type]):
            proc = sh(cmd, repo)
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
        size = write_checkpoint(repo / "models" / "ckpt", gib, seed)
        before = disk_bytes(repo)
        start = time.perf_counter()
        proc = sh([DVC, "add", "models/ckpt"], repo)
        add_seconds = time.perf_counter() - start
        checkpoint = repo / "models" / "ckpt" / "model.safetensors"
        if proc.returncode or not checkpoint.is_file():
            # An unsupported type can leave the file in the cache and nothing in the workspace.
            return {"supported": False, "error": f"dvc add: {first_error(proc)}"}
        after = disk_bytes(repo)
        shutil.rmtree(repo / "models" / "ckpt")
        start = time.perf_counter()
        proc = sh([DVC, "checkout", "models/ckpt.dvc"], repo)
        checkout_seconds = time.perf_counter() - start
        if proc.returncode or not checkpoint.is_file():
            return {"supported": False, "error": f"dvc checkout: {first_error(proc)}"}
        return {"supported": True, "checkpoint_bytes": size, "disk_bytes_before_add": before,
                "disk_bytes_after_add": after, "add_seconds": add_seconds, "checkout_seconds": checkout_seconds,
                "restored": checkpoint.stat().st_size == size}
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", nargs="+", default=list(LINK_TYPES), choices=LINK_TYPES)
    parser.add_argument("--dir", default=".dvc/tmp",
                        help="where the scratch repositories go (same filesystem as the cache)")
    parser.add_argument("--out", default="metrics/bench/dvc_cache.json")
    args = parser.parse_args()

    parent = Path(args.dir).resolve()
    parent.mkdir(parents=True, exist_ok=True)
    fs = sh(["stat", "-f", "-c", "%T", "."], parent).stdout.strip()
    runs: dict[str, list[dict]] = {t: [] for t in args.types}
    for r in range(args.repeats):
        for link_type in args.types:  # in alternation, so a busy disk slows every type alike
            if runs[link_type] and not runs[link_type][0]["supported"]:
                continue
            run = measure(link_type, args.gib, parent, seed=r)
            runs[link_type].append(run)
            log.info("%s repeat %d/%d: %s", link_type, r + 1, args.repeats,
                     {k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()})
    report = {"machine": {"platform": platform.platform(), "filesystem": fs}, "gib": args.gib,
              "repeats": args.repeats, "types": {}}
    for link_type, values in runs.items():
        if not values[0]["supported"]:
            report["types"][link_type] = values[0]
            continue
        report["types"][link_type] = {
            "supported": True,
            "checkpoint_bytes": values[0]["checkpoint_bytes"],
            "median_disk_bytes_after_add": statistics.median(v["disk_bytes_after_add"] for v in values),
            "median_add_seconds": round(statistics.median(v["add_seconds"] for v in values), 2),
            "median_checkout_seconds": round(statistics.median(v["checkout_seconds"] for v in values), 2),
            "restored": all(v["restored"] for v in values),
        }
    copy = report["types"].get("copy")
    if copy and copy.get("supported"):
        for link_type, t in report["types"].items():
            if t.get("supported") and link_type != "copy":
                t["disk_saved_bytes_vs_copy"] = copy["median_disk_bytes_after_add"] - t["median_disk_bytes_after_add"]
                t["add_speedup_vs_copy"] = round(copy["median_add_seconds"] / t["median_add_seconds"], 2)
    write_json(args.out, report)
    for link_type, t in report["types"].items():
        log.info("%s: %s", link_type, t)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main)
