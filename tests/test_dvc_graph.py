"""dvc.yaml lists, for each stage, the library modules it imports: a module missing from the list
would let DVC skip a stage whose code changed. These tests keep the lists complete and the graph sound."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mathpipe.tools.code_deps import imported_files, module_file

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
# A foreach stage keeps its command, deps and params under `do`.
STAGES = {name: stage.get("do", stage) for name, stage in DVC_YAML["stages"].items()}


def stage_module(stage: dict) -> Path:
    match = re.search(r"python -m (stages\.\w+)", stage["cmd"])
    assert match, f"stage command does not run a stages module: {stage['cmd']}"
    return module_file(match.group(1))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_imported_module(name):
    stage = STAGES[name]
    entry = stage_module(stage)
    deps = {d for d in stage["deps"] if isinstance(d, str)}
    needed = set(imported_files(entry))
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage '{name}' imports {missing} but does not list them in deps"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_exist(name):
    for dep in STAGES[name]["deps"]:
        if dep.startswith(("mathpipe/", "stages/")):
            assert (ROOT / dep).is_file(), f"stage '{name}' depends on a missing file {dep}"


def test_every_stage_declares_its_params_section():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in STAGES.items():
        sections = [p for p in stage.get("params", []) if isinstance(p, str)]
        assert sections, f"stage '{name}' declares no params"
        for section in sections:
            assert section.split(".")[0] in params, f"stage '{name}' reads unknown params section '{section}'"


def test_metrics_are_tracked_by_git_not_the_cache():
    for name, stage in STAGES.items():
        for entry in stage.get("metrics", []):
            (path, opts), = entry.items()
            assert opts.get("cache") is False, f"metric {path} of stage '{name}' must be cache: false"


def rendered_stages(tmp_path: Path, overrides: dict) -> list:
    """DVC's own view of the stages, in a copy of the checkout whose params.yaml has the overrides."""
    from dvc.repo import Repo

    from tests.checkout import copy_checkout, override_params, run

    repo = copy_checkout(tmp_path / "repo")
    override_params(repo, overrides)
    run(["dvc", "dag"], repo)  # renders every stage: a null dep used to stop every DVC command here
    with Repo(str(repo)) as dvc:
        return list(dvc.index.stages)


def path_deps(stage) -> list[Path]:
    from dvc.dependency.param import ParamsDependency

    return [Path(dep.fs_path) for dep in stage.deps if not isinstance(dep, ParamsDependency)]


@pytest.mark.parametrize("overrides", [
    {"sft": {"val_file": None}},
    {"dpo": {"pairs": {"val_files": None}}},
    {"dpo": {"pairs": {"format": "distilabel", "train_files": "external/pairs/*.jsonl", "val_files": None}}},
    {"dpo": {"pairs": {"format": "distilabel", "train_files": "data/train-*.parquet", "val_files": None,
                       "hub": {"repo": "argilla/distilabel-math-preference-dpo", "revision": "0" * 40}}}},
], ids=["no-sft-val", "no-dpo-val", "local-glob", "hub"])
def test_optional_glob_and_hub_inputs_need_no_edit_of_dvc_yaml(tmp_path, overrides):
    """params.yaml documents these values; dvc.yaml must render and every declared dependency
    exist or be made by a stage, so that `dvc exp run -S ...` alone switches the data source."""
    stages = rendered_stages(tmp_path, overrides)
    made = [Path(out.fs_path) for stage in stages for out in stage.outs]
    for stage in stages:
        for path in path_deps(stage):
            made_here = any(m == path or m in path.parents or path in m.parents for m in made)
            assert path.exists() or made_here, f"{stage.addressing}: dependency {path} neither exists nor is made by a stage"


def test_the_real_profile_does_not_depend_on_the_generated_sample(tmp_path):
    """With a Hub model and Hub data, a change to sample.* must re-run sample_data alone, not download
    the model again and re-run everything after it."""
    from mathpipe.tools.profile import load_profile, params_overrides

    stages = rendered_stages(tmp_path, params_overrides(load_profile(str(ROOT / "profiles/qwen3-0.6b.yaml"))))
    sample = next(Path(out.fs_path) for stage in stages if stage.addressing.endswith("sample_data") for out in stage.outs)
    for stage in stages:
        if not stage.addressing.endswith("sample_data"):
            assert not [p for p in path_deps(stage) if p == sample or sample in p.parents], stage.addressing


def test_dvc_yaml_holds_the_code_deps_make_deps_derives():
    from mathpipe.tools.code_deps import render

    text = (ROOT / "dvc.yaml").read_text()
    assert render(text) == text, "dvc.yaml's code deps are stale: run `make deps`"


def test_make_deps_rewrites_only_the_code_entries():
    from mathpipe.tools.code_deps import render

    text = ("stages:\n  grpo:\n    cmd: python -m stages.grpo\n    deps:\n      - mathpipe/hub.py\n"
            "      - ${grpo.model}   # the policy\n    params: [grpo]\n")
    out = render(text)
    assert "- mathpipe/hub.py" not in out  # grpo does not import it
    assert "      - stages/grpo.py\n      - mathpipe/answers.py\n" in out and "mathpipe/training/grpo_rewards.py" in out
    assert "      - ${grpo.model}   # the policy\n    params: [grpo]\n" in out
    assert render(out) == out
