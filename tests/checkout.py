"""A copy of this checkout in a new git repository, and running commands in it (DVC, the stages).

The end-to-end tests run the pipeline there, so the checkout itself is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mathpipe.config import load_params
from mathpipe.tools.profile import load_profile, merge, params_overrides

ROOT = Path(__file__).resolve().parents[1]
# Stages whose outputs hash the same on every machine (README, "Reproducibility"); the tokenizer
# too, by its own fingerprint (tokenizer_revision in metrics/base_model.json).
STAGES_REPRODUCED_EXACTLY = ("sample_data", "prepare")


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def outs_hashes(lock: dict, stage: str) -> dict[str, str]:
    """Hashes of a stage's data and model outputs (its metrics files also hold timings)."""
    return {o["path"]: o["md5"] for o in lock["stages"][stage].get("outs", [])
            if not o["path"].startswith("metrics/")}


def copy_checkout(dest: Path) -> Path:
    """The repository's files (as git sees them, uncommitted changes included) in a new git repository."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    run(["git", "init", "-q"], dest)
    commit(dest, "copy")  # a clone has history; DVCLive reads HEAD
    return dest


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "commit", "-q", "-m", message], repo)


def override_params(repo: Path, overrides: dict) -> dict:
    """The copy's params.yaml with `overrides` applied (a key params lacks is an error); returns it."""
    params = merge(load_params(repo / "params.yaml"), overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return params


def apply_profile(repo: Path, profile: str) -> None:
    """The copy's params.yaml with a profile applied (as `make run PROFILE=...` would), committed."""
    override_params(repo, params_overrides(load_profile(str(repo / "profiles" / f"{profile}.yaml"))))
    commit(repo, f"profile {profile}")
