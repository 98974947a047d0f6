"""Profiles (profiles/*.yaml) and the offline dry run that checks them before anything downloads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mathpipe.config import load_params, load_yaml
from mathpipe.errors import ConfigError
from mathpipe.tools.dry_run import dry_run
from mathpipe.tools.profile import hydra_value, load_profile, merge, params_overrides, set_arguments

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "profiles" / "qwen3-0.6b.yaml"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the dry run sets it too; this keeps the test's env clean


def test_dvc_set_param_applies_a_profile_exactly_as_the_dry_run_sees_it(tmp_path):
    """`make run PROFILE=...` passes the profile to `dvc exp run -S`: DVC's own override code must
    produce the params the dry run validated (floats stay floats, null hub sections become mappings)."""
    from dvc.utils.hydra import apply_overrides

    params = load_params(ROOT / "params.yaml")
    overrides = params_overrides(load_profile(str(QWEN)))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", set_arguments(params, overrides))
    assert load_params(tmp_path / "params.yaml") == merge(params, overrides)


def test_a_profile_may_add_trl_arguments_params_yaml_does_not_set():
    """Every train: section is its TRL config's own names: the real profile's
    gradient_accumulation_steps is not in grpo.train, so it reaches DVC as an added key (`+`), which
    DVC accepts; a section that is not TRL's still refuses a key params.yaml lacks (a typo)."""
    params = load_params(ROOT / "params.yaml")
    assert "gradient_accumulation_steps" not in params["grpo"]["train"]
    overrides = {"grpo": {"train": {"gradient_accumulation_steps": 2, "max_steps": 7}}}
    assert merge(params, overrides)["grpo"]["train"]["gradient_accumulation_steps"] == 2
    nested = {"grpo": {"train": {"model_init_kwargs": {"attn_implementation": "sdpa"}}}}
    assert merge(params, nested)["grpo"]["train"]["model_init_kwargs"] == {"attn_implementation": "sdpa"}
    assert set_arguments(params, overrides) == ["+grpo.train.gradient_accumulation_steps=2", "grpo.train.max_steps=7"]
    assert merge(params, {"sft": {"train": {"neftune_noise_alpha": 5}}})["sft"]["train"]["neftune_noise_alpha"] == 5
    with pytest.raises(ConfigError, match="sft.launch.processes: not a parameter"):
        merge(params, {"sft": {"launch": {"processes": 2}}})


@given(st.floats(min_value=1e-12, max_value=1e12))
def test_floats_pass_through_dvc_set_param_as_floats(value):
    from dvc.utils.hydra import to_hydra_overrides

    (override,) = to_hydra_overrides([f"lr={hydra_value(value, 'lr')}"])
    assert isinstance(override.value(), float) and override.value() == value


def test_params_read_exponents_as_numbers_like_dvc_writes_them():
    assert load_yaml("a: 5e-05\nb: 1.0e-4\nc: 3\nd: '5e-05'\n") == {"a": 5e-05, "b": 1e-4, "c": 3, "d": "5e-05"}


def test_the_qwen3_profile_passes_the_dry_run_without_a_download(capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the dry run tried to download")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    assert dry_run(str(QWEN)) == 0
    out = capsys.readouterr().out
    assert "every section valid" in out and "dry run passed" in out
    assert "attention.layers: [0, 14, 27] of 28" in out
    assert "parameters: 0.60 B" in out
    assert "sft.lora: targets down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in out
    grpo = re.search(r"grpo: ~(\d+) GiB per GPU for training \+ (\d+) GiB for its colocated vLLM engine "
                     r"\(vllm_gpu_memory_utilization 0.3\), ~(\d+) GiB in all", out)
    assert grpo and int(grpo.group(2)) == 24 and int(grpo.group(3)) >= int(grpo.group(1)) + 23, out  # 0.3 x 80 GB
    assert "64,000 completions over 250 steps" in out  # 16 per GPU x 2 accumulation x 8 GPUs x 250
    if SHARED.is_dir():  # the real test sets, read with the pipeline's readers
        assert "gsm8k_test: local copy" in out and "1,319 rows" in out and "1,098 rows" in out


def write_profile(tmp_path: Path, edit) -> str:
    profile = load_yaml(QWEN.read_text())
    edit(profile)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile, allow_unicode=True))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["sft"]["lora"].update(rank=8), r"sft.lora.rank: not an argument of PEFT's LoraConfig"),
    (lambda p: p["base_model"]["hub"].update(revision="main"), r"base_model.hub.revision: must be a 40-character"),
    (lambda p: p["prepare"]["hub"]["openr1"].update(revision="v1.0"), r"prepare.hub.openr1.revision: must be a 40"),
    (lambda p: p["sft"]["lora"].update(target_modules=["qkv_proj"]),
     r"sft.lora.target_modules\[0\]: the model has no linear module named 'qkv_proj'"),
    (lambda p: p.setdefault("attention", {}).update(layers=["first", 28], compare_layers=["first"]),
     r"attention.layers\[1\]: layer 28 does not exist: the model has 28 layers"),
    (lambda p: p["sft"]["train"].update(max_length=65536), r"sft.train.max_length: 65536 is longer than the model's context"),
    (lambda p: p["evaluate"]["generation"].update(max_new_tokens=8192),
     r"evaluate.generation.max_new_tokens: 8192 leaves no room for the prompt"),
    (lambda p: p["dpo"]["train"].update(max_length=4096),
     r"dpo.train.max_length: 4096 cannot hold a prompt and an answer of rejection_sampling.generation.max_new_tokens"),
    (lambda p: p["prepare"]["filters"].update(max_prompt_tokens=None),
     r"dpo.train.max_length: 4608 cannot hold a prompt of up to 4096 tokens \(prepare.filters.max_tokens, with "
     r"prepare.filters.max_prompt_tokens null\)"),
    (lambda p: p["prepare"]["filters"].update(max_prompt_tokens=1024),
     r"dpo.train.max_length: 4608 cannot hold a prompt of up to 1024 tokens \(prepare.filters.max_prompt_tokens\)"),
    (lambda p: p["reward_model"]["train"].update(max_length=2048),
     r"reward_model.train.max_length: 2048 is shorter than the pairs prepare keeps"),
    (lambda p: p["sft"]["launch"].update(config_file="configs/accelerate/nope.yaml"),
     r"sft.launch.config_file: accelerate config not found"),
    (lambda p: p["sft"].update(chat_template="trl:nope.jinja"), r"sft.chat_template: file not found"),
    (lambda p: p["dry_run"].update(model_config=None), r"not in the local Hub cache and the profile gives no"),
    (lambda p: p["rejection_sampling"]["engine"].update(data_parallel_size=16),
     r"rejection_sampling.engine.data_parallel_size: 16 engines x 1 GPUs need 16 GPUs; dry_run.gpus is 8"),
    (lambda p: p["grpo"]["train"].update(num_generation=16),
     r"grpo.train.num_generation: not an argument of TRL's GRPOConfig \(did you mean num_generations"),
    (lambda p: p["grpo"]["train"].update(per_device_train_batch_size=12),
     r"grpo.train: GRPOConfig rejects these settings: .*divisible by num_generations"),
    (lambda p: p["grpo"]["train"].update(max_completion_length=65536),
     r"grpo.train.max_completion_length: 65536 is longer than the model's context"),
    (lambda p: p["grpo"].update(rewardz={}), r"grpo.rewardz: not a parameter in params.yaml"),
    # over the default's lora: null (full fine-tuning), a partial mapping is all the profile gets
    (lambda p: p["grpo"]["lora"].pop("target_modules"), r"grpo.lora.target_modules: missing"),
])
def test_a_bad_profile_stops_the_dry_run_naming_the_key(tmp_path, capsys, edit, message):
    assert dry_run(write_profile(tmp_path, edit)) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_an_unknown_profile_lists_the_known_ones(monkeypatch):
    monkeypatch.chdir(ROOT)
    known = sorted(path.stem for path in (ROOT / "profiles").glob("*.yaml"))
    assert {"qwen3-0.6b", "smoke"} <= set(known)
    listed = re.escape(", ".join(known))
    with pytest.raises(ConfigError, match=rf"profile not found: profiles/qwen3-8b.yaml \(profiles: {listed}\)"):
        load_profile("qwen3-8b")


@pytest.mark.parametrize("users_value", [None, "0", "1"])
def test_a_profile_run_starts_dvc_with_the_users_hub_setting_not_the_dry_runs(monkeypatch, users_value):
    """`make run PROFILE=...` runs the offline dry run, then `dvc exp run`: the stages must be free to
    download (base_model and prepare from the Hub) unless the user said otherwise."""
    import os

    from mathpipe.tools import run_profile

    monkeypatch.chdir(ROOT)
    if users_value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", users_value)
    started = {}

    def call(command):
        started.update(command=command, offline=os.environ.get("HF_HUB_OFFLINE"))
        return 0

    monkeypatch.setattr(run_profile.subprocess, "call", call)
    assert run_profile.main(["run", "smoke"]) == 0
    assert started["command"][:5] == ["dvc", "exp", "run", "-n", "smoke"]
    assert started["offline"] == users_value


def test_the_smoke_profile_passes_the_dry_run(capsys, monkeypatch):
    """make test runs the pipeline on it (tests/test_e2e.py): every key it sets must be a parameter."""
    monkeypatch.chdir(ROOT)
    assert dry_run("smoke") == 0
    assert "params: params.yaml + profiles/smoke: every section valid" in capsys.readouterr().out


def test_the_default_params_pass_the_dry_run(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert dry_run(None) == 0
    assert "model config: base_model.tiny" in capsys.readouterr().out


def test_dvc_set_param_changes_one_key_of_a_one_line_lora_section(tmp_path):
    """params.yaml writes each `lora:` on one line: `dvc exp run -S sft.lora.lora_alpha=32` (DVC's own
    override code) changes that key alone, and `+` adds a PEFT argument params.yaml does not set."""
    from dvc.utils.hydra import apply_overrides

    params = load_params(ROOT / "params.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", ["sft.lora.lora_alpha=32", "+sft.lora.use_rslora=true"])
    changed = load_params(tmp_path / "params.yaml")
    assert changed["sft"]["lora"] == {**params["sft"]["lora"], "lora_alpha": 32, "use_rslora": True}
    assert {k: v for k, v in changed.items() if k != "sft"} == {k: v for k, v in params.items() if k != "sft"}
    assert merge(params, {"sft": {"lora": {"use_rslora": True}}})["sft"]["lora"]["use_rslora"] is True


# --- profiles that build on each other ---------------------------------------------------------------


def test_a_profile_states_only_how_it_differs_from_the_one_it_extends():
    real, rehearsal = load_profile(str(QWEN)), load_profile(str(ROOT / "profiles" / "qwen3-rehearsal.yaml"))
    raw = load_yaml((ROOT / "profiles" / "qwen3-rehearsal.yaml").read_text())
    assert raw["extends"] == "qwen3-0.6b" and "chat_template" not in raw["sft"]
    assert rehearsal["sft"]["chat_template"] == real["sft"]["chat_template"]  # inherited
    assert rehearsal["sft"]["train"]["max_length"] == real["sft"]["train"]["max_length"]  # the real lengths
    assert rehearsal["sft"]["train"]["max_steps"] == 1 and rehearsal["sft"]["dtype"] == "float32"  # its own
    assert rehearsal["dry_run"]["model_config"] == real["dry_run"]["model_config"] and rehearsal["dry_run"]["gpus"] == 2
    assert "extends" not in rehearsal


def test_extends_resolves_beside_the_profile_and_refuses_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b\nsft: {train: {max_steps: 3}}\n")
    (tmp_path / "b.yaml").write_text("sft: {train: {max_steps: 1, learning_rate: 0.1}}\n")
    assert load_profile(str(tmp_path / "a.yaml")) == {"sft": {"train": {"max_steps": 3, "learning_rate": 0.1}}}
    (tmp_path / "b.yaml").write_text("extends: a\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: extends: a cycle of profiles \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"):
        load_profile(str(tmp_path / "a.yaml"))
    (tmp_path / "b.yaml").write_text("extends: nope\n")
    with pytest.raises(ConfigError, match=r"profile not found: .*nope\.yaml"):
        load_profile(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(("profile", "expected"), [
    ("qwen3-4b", ["parameters: 4.02 B", "attention.layers: [0, 18, 35] of 36", "sft: ~"]),
    ("deepseek-math-7b-eval", ["parameters: 6.91 B", "within the model's context of 4,096 tokens",
                               "evaluate: ~"]),
])
def test_the_other_profiles_pass_the_dry_run_offline(capsys, monkeypatch, profile, expected):
    def no_network(*args, **kwargs):
        raise AssertionError("the dry run tried to download")

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_network)
    monkeypatch.setattr("huggingface_hub.snapshot_download", no_network)
    assert dry_run(profile) == 0
    out = capsys.readouterr().out
    assert "dry run passed" in out and all(e in out for e in expected), out
    if profile == "deepseek-math-7b-eval":  # evaluation only: no trainer's estimate
        assert "\n      sft: " not in out and "\n      dpo: " not in out


def test_an_evaluation_only_profile_runs_only_its_stages(monkeypatch):
    from mathpipe.tools import run_profile

    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(run_profile, "dry_run", lambda profile: 0)
    started = {}
    monkeypatch.setattr(run_profile.subprocess, "call", lambda command: started.update(command=command) or 0)
    assert run_profile.main(["run", "deepseek-math-7b-eval"]) == 0
    assert started["command"][-1] == "evaluate@base"
    assert "base_model.chat_template=\"configs/chat_templates/question_answer.jinja\"" in started["command"]
    with pytest.raises(ConfigError, match=r"stages: evaluat@base is not a stage of dvc.yaml"):
        run_profile.stage_targets({"stages": ["evaluat@base"]})


@pytest.mark.parametrize("profile", ["qwen3-0.6b", "qwen3-4b", "deepseek-math-7b-eval"])
def test_every_vllm_engine_of_a_gpu_profile_uses_every_gpu_it_plans_for(monkeypatch, profile):
    """One engine on one of 8 GPUs would evaluate five models while 7 GPUs sit idle."""
    monkeypatch.chdir(ROOT)
    sections = load_profile(profile)
    gpus = sections.pop("dry_run")["gpus"]
    sections.pop("stages", None)
    params = merge(load_params(ROOT / "params.yaml"), sections)
    engines = {f"{section}.engine": params[section]["engine"] for section in ("rejection_sampling", "evaluate")
               if params[section]["engine"]["backend"] == "vllm"}
    assert "evaluate.engine" in engines
    for key, engine in engines.items():
        assert engine["data_parallel_size"] * engine["tensor_parallel_size"] == gpus, (key, engine, gpus)
