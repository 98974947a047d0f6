"""The rehearsal's local Hub cache (mathpipe/tools/rehearsal.py): what the real profile's code path reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mathpipe.io import read_json
from mathpipe.tools import rehearsal
from tests.params import param_config

ROOT = Path(__file__).resolve().parent.parent
BUILD = {"layers": 1, "problems": 32}  # smaller than make rehearse's
REVISION = rehearsal.revision(**BUILD)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal") / "hub"
    built = rehearsal.build(out, **BUILD, shared_data=ROOT.parent / "shared" / "data")
    assert built["revision"] == REVISION
    return out


@pytest.fixture
def offline_hub(cache, monkeypatch):
    """huggingface_hub pointed at the rehearsal cache, offline (what `make rehearse` sets in the env)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_the_cache_is_laid_out_as_huggingface_hub_lays_it_out(cache):
    from huggingface_hub import snapshot_download

    for repo, kind in ((rehearsal.MODEL_REPO, "model"), (rehearsal.DATA_REPO, "dataset")):
        folder = Path(snapshot_download(repo, repo_type=kind, revision=REVISION, cache_dir=cache,
                                        local_files_only=True))
        assert folder.parent.name == "snapshots" and folder.name == REVISION
        assert (folder.parent.parent / "refs" / "main").read_text() == REVISION
        for path in (p for p in folder.rglob("*") if not p.is_dir()):
            assert path.is_symlink() and path.resolve().parent.name == "blobs"


def test_a_cached_hub_model_loads_offline_through_base_model(offline_hub, tmp_path):
    """snapshot_download with local_dir never looks in the cache: base_model offline with the model
    cached failed until it downloaded through the cache."""
    from mathpipe.training.base_model import BaseModelConfig, HubModel, build_base_model

    cfg = param_config(BaseModelConfig, "base_model", source="hub", hub=HubModel(rehearsal.MODEL_REPO, REVISION),
                          out_dir=str(tmp_path / "base"))
    summary = build_base_model(cfg)
    assert summary["model_id"] == rehearsal.MODEL_REPO and summary["revision"] == REVISION
    assert summary["layers"] == 1 and summary["vocab_size"] == 151669 and summary["tie_word_embeddings"]
    assert not any(p.is_symlink() for p in (tmp_path / "base").iterdir())  # real files, for DVC


def test_the_model_has_qwen3_0_6bs_shape_in_bf16(cache):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    from mathpipe import prompts

    snapshot = rehearsal.repo_folder(cache, rehearsal.MODEL_REPO, "model") / "snapshots" / REVISION
    config, real = read_json(snapshot / "config.json"), read_json(ROOT / "profiles/qwen3-0.6b.config.json")
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "vocab_size", "max_position_embeddings", "tie_word_embeddings", "rope_theta", "rms_norm_eps"):
        assert config.get(key, config.get("rope_parameters", {}).get(key)) == real[key], key
    assert config["num_hidden_layers"] == 1
    with safe_open(snapshot / "model.safetensors", "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
    tok = AutoTokenizer.from_pretrained(snapshot)
    ids = dict(zip(rehearsal.QWEN3_ADDED, range(151643, 151669)))
    assert {t: tok.convert_tokens_to_ids(t) for t in ids} == ids and len(tok) == 151669
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.decode(tok("<think>\n1 + 1\n</think>")["input_ids"]) == "<think>\n1 + 1\n</think>"
    off = prompts.render_prompt(tok, "1 + 1?", chat_template_kwargs={"enable_thinking": False})
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # Qwen3's own template


def test_traces_are_r1_length_with_the_real_datas_gaps(cache):
    from transformers import AutoTokenizer

    from mathpipe.data import readers

    model = rehearsal.repo_folder(cache, rehearsal.MODEL_REPO, "model") / "snapshots" / REVISION
    data = rehearsal.repo_folder(cache, rehearsal.DATA_REPO, "dataset") / "snapshots" / REVISION
    rows = list(readers.iter_openr1(readers.expand_paths("openr1/*.parquet", data)))  # the schema is checked
    tok = AutoTokenizer.from_pretrained(model)
    lengths = sorted(len(tok(g)["input_ids"]) for r in rows for g in r["generations"])
    assert lengths[0] > 800 and lengths[len(lengths) // 2] > 1500  # R1 traces: thousands of tokens
    traces = [(g, (r["finish_reasons"] or [None] * 4)[i]) for r in rows for i, g in enumerate(r["generations"])]
    assert any("</think>" not in g for g, _ in traces)  # cut off inside the thinking
    assert any(r["correctness_llama"] is None for r in rows) and any(r["finish_reasons"] is None for r in rows)
    for name in ("gsm8k/test.jsonl", "cmath/test.jsonl", "math500/test.jsonl"):  # the real files, as they are
        assert (data / name).read_bytes() == (ROOT.parent / "shared/data" / name).read_bytes()


def test_the_rehearsal_profile_pins_the_cache_revision():
    import yaml

    profile = yaml.safe_load((ROOT / "profiles/qwen3-rehearsal.yaml").read_text())
    assert profile["base_model"]["hub"] == {"model_id": rehearsal.MODEL_REPO, "revision": rehearsal.REVISION}
    assert {s["repo"] for s in profile["prepare"]["hub"].values()} == {rehearsal.DATA_REPO}
    assert {s["revision"] for s in profile["prepare"]["hub"].values()} == {rehearsal.REVISION}
    assert rehearsal.revision(layers=1) != rehearsal.REVISION  # another build, another pin


def test_each_stage_process_records_its_time_and_memory(tmp_path):
    figures = tmp_path / "figures.jsonl"
    env = {**os.environ, "MATHPIPE_STAGE_FIGURES": str(figures), "PYTHONPATH": str(ROOT)}
    (tmp_path / "params.yaml").write_text("evaluate: {models: [base]}\n")
    result = subprocess.run([sys.executable, "-m", "stages.evaluate", "--model", "nope"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    (record,) = [json.loads(line) for line in figures.read_text().splitlines()]
    assert record["stage"] == "evaluate --model nope" and record["exit_status"] == 2
    assert record["seconds"] >= 0 and record["peak_rss_mib"] > 50


# --- the CI-sized rehearsal: the real profile's path, every stage, shrunk to minutes ------------------

# The rehearsal profile with one step, one or two prompts and short answers everywhere. "zq12" stops
# random output after ~14 tokens (11,100 filler ids), so samples finish and can be paired.
STOP = ["<|im_end|>", "<|im_start|>", "zq12"]
CI_SIZE = {
    "sft": {"max_train_samples": 1, "train": {"max_steps": 1, "save_steps": 1}},
    "merge": {"probe_samples": 1},
    "reward_model": {"max_train_samples": 1, "train": {"gradient_accumulation_steps": 1}},
    "rejection_sampling": {"max_prompts": 4, "generation": {"max_new_tokens": 64, "stop": STOP}},
    "dpo": {"max_train_samples": 1, "train": {"gradient_accumulation_steps": 1}},
    "grpo": {"max_prompts": 1, "train": {"max_completion_length": 16}},
    "evaluate": {"max_samples": 1, "generation": {"max_new_tokens": 64, "stop": STOP},
                 "sampled": {"max_samples": 1, "generation": {"max_new_tokens": 64, "stop": STOP}}},
    "attention": {"generation": {"max_new_tokens": 8}},
    "base_model": {"hub": {"revision": REVISION}},
    "prepare": {"val_fraction": 0.3,  # held-out pairs for the reward model from few problems
                "hub": {name: {"revision": REVISION} for name in
                        ("openr1", "gsm8k_train", "gsm8k_test", "cmath_test", "math_test")}},
}


@pytest.fixture(scope="module")
def rehearsed(cache, tmp_path_factory):
    from tests.checkout import apply_profile, commit, copy_checkout, override_params

    repo = copy_checkout(tmp_path_factory.mktemp("rehearsal-run") / "repo")
    apply_profile(repo, "qwen3-rehearsal")
    override_params(repo, CI_SIZE)
    commit(repo, "CI size")
    figures = repo / "figures.jsonl"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "1",
           "MATHPIPE_STAGE_FIGURES": str(figures)}
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-3000:]}"
    return repo, [json.loads(line) for line in figures.read_text().splitlines()]


@pytest.mark.e2e
@pytest.mark.rehearsal
def test_every_stage_of_the_real_path_runs_on_the_qwen3_shaped_model(rehearsed):
    import yaml

    repo, figures = rehearsed
    # The pipeline as this profile renders it (evaluate and attention of base and grpo only); the
    # copied dvc.lock still holds the default's other items.
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=repo,
                            capture_output=True, text=True, check=True).stdout.split()
    stages = set(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    assert stages == {name.split("@")[0] for name in listed}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(listed) <= set(lock["stages"]), set(listed) - set(lock["stages"])
    assert all(f["exit_status"] == 0 for f in figures) and len(figures) == len(listed)
    base = read_json(repo / "metrics/base_model.json")
    assert (base["model_id"], base["revision"]) == (rehearsal.MODEL_REPO, REVISION)  # the Hub path
    assert base["vocab_size"] == 151669 and base["hidden_size"] == 1024
    from safetensors.torch import load_file

    for name in ("sft", "rft", "dpo"):  # one step at a learning rate above 0 (no warm-up): the adapter moved
        weights = load_file(repo / f"models/{name}_adapter/adapter_model.safetensors")
        assert any(w.abs().max() > 0 for key, w in weights.items() if "lora_B" in key), name
    for name in ("sft", "rft", "dpo", "grpo"):
        merge = read_json(repo / f"metrics/merge/{name}.json")
        assert merge["max_abs_logit_diff"] <= merge["tolerance"] < merge["cast_abs_logit_diff"]  # bf16, apart
        assert read_json(repo / f"models/{name}/config.json")["dtype"] == "bfloat16"
    sampling = read_json(repo / "metrics/rejection_sampling.json")
    assert sampling["backend"] == "vllm" and sampling["pairs_train"] > 0
    assert read_json(repo / "metrics/sft.json")["train_tokens"] > 800  # one R1-length trace
    grpo = read_json(repo / "metrics/grpo.json")  # TRL's GRPOTrainer on the bf16 checkpoint, LoRA
    assert (grpo["steps"], grpo["num_generations"], grpo["max_completion_length"]) == (1, 2, 16)
    for model in ("base", "grpo"):  # the profile evaluates the Hub base and the last trained model
        for benchmark in ("gsm8k", "cmath", "math"):
            m = read_json(repo / f"metrics/eval/{model}/{benchmark}.json")
            assert m["config"]["backend"] == "vllm" and m["samples_per_question"] == 2
    # the same paired comparisons as the real profile, with no extra params: the Hub base against the
    # last trained model (its nearest evaluated ancestor), and GRPO against SFT with sampled answers
    report = read_json(repo / "metrics/report.json")
    edges = {(c["model"], c["against"], c["benchmark"], c["answers"]) for c in report["comparisons"]}
    assert {("grpo", "base", b, "avg@2") for b in ("gsm8k", "cmath", "math")} | {("grpo", "sft", "gsm8k", "avg@2")} == edges
    assert "**Did each stage help?**" in (repo / "metrics/report.md").read_text()
