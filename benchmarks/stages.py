"""Where the time of `dvc repro` goes, stage by stage, in a fresh copy of this checkout.

    make bench-stages                               # = python -m benchmarks.stages (the default params)
    python -m benchmarks.stages --profile smoke     # the same for profiles/smoke.yaml (a few minutes)

The copy runs `dvc repro` from nothing (no cache), and each stage's wall time is read off DVC's
"Running stage" lines as they stream. Beside it, the seconds `python -c "import stages.<module>"`
takes (median of --repeats, run after the pipeline, one at a time): a floor on what each stage
process pays before any work, since libraries a stage imports inside its functions (TRL, vLLM)
are not counted. Writes metrics/bench/stages.json and prints the table, slowest first.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from mathpipe.cli import run_stage
from mathpipe.io import write_json
from tests.checkout import ROOT, apply_profile, copy_checkout

log = logging.getLogger("benchmarks.stages")
RUNNING = re.compile(r"^Running stage '([^']+)'")


def timed_repro(repo: Path) -> tuple[dict[str, float], float]:
    """Seconds per stage of one `dvc repro` (a stage ends when the next starts or DVC exits)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    started = time.monotonic()
    marks: list[tuple[str, float]] = []
    with subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        tail = []
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            if match := RUNNING.match(line):
                marks.append((match.group(1), time.monotonic()))
                log.info("%6.1f s  %s", marks[-1][1] - started, match.group(1))
    ended = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"dvc repro failed in {repo}:\n{''.join(tail)}")
    ends = [t for _, t in marks[1:]] + [ended]
    return {name: round(end - start, 1) for (name, start), end in zip(marks, ends)}, round(ended - started, 1)


def import_seconds(repo: Path, module: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=repo, check=True)
        times.append(time.monotonic() - start)
    return round(statistics.median(times), 2)


def stage_modules(repo: Path) -> dict[str, str]:
    """Stage name (foreach stages by their prefix) -> the stages module its command runs."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name: re.search(r"python -m (stages\.\w+)", s.get("do", s)["cmd"]).group(1) for name, s in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", help="a profile applied to params.yaml first (smoke: a few minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="import timings per stage module")
    parser.add_argument("--out", default="metrics/bench/stages.json")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    try:
        repo = copy_checkout(scratch / "repo")
        if args.profile:
            apply_profile(repo, args.profile)
        seconds, total = timed_repro(repo)
        modules = stage_modules(repo)
        imports = {m: import_seconds(repo, m, args.repeats) for m in sorted(set(modules.values()))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = sorted(({"stage": name, "seconds": s, "module": modules[name.split("@")[0]],
                    "import_seconds": imports[modules[name.split("@")[0]]]} for name, s in seconds.items()),
                  key=lambda r: -r["seconds"])
    result = {
        "profile": args.profile or "default",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "total_seconds": total,
        "stage_processes": len(rows),
        "import_seconds_all_stages": round(sum(r["import_seconds"] for r in rows), 1),
        "stages": rows,
    }
    write_json(args.out, result)
    print(f"{'stage':<22} {'seconds':>8} {'import':>7}")
    for r in rows:
        print(f"{r['stage']:<22} {r['seconds']:>8.1f} {r['import_seconds']:>7.2f}")
    print(f"{'total':<22} {total:>8.1f} {result['import_seconds_all_stages']:>7.1f}   -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
