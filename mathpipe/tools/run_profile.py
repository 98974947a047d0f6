"""Run or show a profile (profiles/<name>.yaml) as a DVC experiment, after its offline dry run.

    python -m mathpipe.tools.run_profile run qwen3-0.6b   # make run PROFILE=qwen3-0.6b: dvc exp run -S ...
    python -m mathpipe.tools.run_profile show qwen3-0.6b  # the -S arguments, one per line

The dry run sets HF_HUB_OFFLINE for itself only: `dvc exp run` starts with the user's environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mathpipe.errors import ConfigError
from mathpipe.tools.dry_run import dry_run
from mathpipe.tools.profile import load_profile, merge, params_overrides, set_arguments


def stage_targets(profile: dict) -> list[str]:
    """The profile's `stages:` (DVC stage names, e.g. evaluate@base): what `dvc exp run` reproduces."""
    stages = profile.get("stages") or []
    if not (isinstance(stages, list) and all(isinstance(s, str) for s in stages)):
        raise ConfigError(f"stages: expected a list of DVC stage names, got {stages!r}")
    import yaml

    known = yaml.safe_load(Path("dvc.yaml").read_text(encoding="utf-8"))["stages"]
    unknown = [s for s in stages if s.split("@")[0] not in known]
    if unknown:
        raise ConfigError(f"stages: {unknown[0]} is not a stage of dvc.yaml (its stages: {', '.join(known)})")
    return stages


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mathpipe.cli import setup_logging
    from mathpipe.config import load_params

    parser = argparse.ArgumentParser(description="run or show a parameter profile as a DVC experiment")
    parser.add_argument("action", choices=["run", "show"])
    parser.add_argument("profile", help="a name under profiles/ (qwen3-0.6b) or a yaml file")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        params = load_params()
        profile = load_profile(args.profile)
        overrides = params_overrides(profile)
        merge(params, overrides)
        sets = set_arguments(params, overrides)
        targets = stage_targets(profile)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.action == "show":
        print("\n".join(sets))
        return 0
    if dry_run(args.profile) != 0:
        return 2
    command = ["dvc", "exp", "run", "-n", Path(args.profile).stem]
    for item in sets:
        command += ["-S", item]
    command += targets  # none: the whole pipeline; else these stages and what they depend on
    print(" ".join(command), flush=True)
    return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
