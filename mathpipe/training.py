"""What the training stages (sft, reward_model, dpo) share: settings, LoRA, checkpoints, logging.

    settings = from_dict(TrainSettings, raw, "sft.train")
    lora = lora_config(model, cfg.lora, "sft.lora")          # None for full fine-tuning
    kwargs = trainer_kwargs(settings, checkpoint_dir)        # for SFTConfig / RewardConfig / DPOConfig
    resume = prepare_checkpoints(checkpoint_dir, fingerprint)  # a checkpoint to resume from, or None

The trainers are TRL's; this module only turns params.yaml into their arguments, checks them before
any work, and keeps the run's checkpoints honest: a checkpoint folder written by another
configuration (another learning rate, other data) is cleared instead of resumed from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from mathpipe import prompts
from mathpipe.config import check, check_positive, check_range
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.io import read_json, write_json
from mathpipe.launch import distributed_state, is_main_process

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "mathpipe-run.json"  # in the checkpoint folder: which configuration wrote it


@dataclass
class TrainSettings:
    """The optimisation loop, in the Trainer's own terms (one process; see accelerate for more)."""

    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 16  # per device
    grad_accumulation: int = 1
    eval_batch_size: int = 32
    max_length: int = 512  # in tokens; longer sequences are truncated
    group_by_length: bool = True  # batches of similar length: less padding, same examples
    gradient_checkpointing: bool = False
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int = 50  # eval loss on the validation split every N steps (and at the end)
    save_steps: int = 50  # checkpoint every N steps, for resuming
    save_total_limit: int = 2

    def validate(self, prefix: str) -> None:
        check_positive(self.learning_rate, f"{prefix}.learning_rate")
        check(self.epochs > 0 or self.max_steps > 0, f"{prefix}.epochs", f"must be > 0, got {self.epochs}")
        check(self.max_steps == -1 or self.max_steps > 0, f"{prefix}.max_steps", "must be -1 (use epochs) or > 0")
        check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.weight_decay >= 0, f"{prefix}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check_positive(self.max_grad_norm, f"{prefix}.max_grad_norm")
        for name in ("batch_size", "grad_accumulation", "eval_batch_size", "max_length", "logging_steps",
                     "eval_steps", "save_steps", "save_total_limit"):
            check_positive(getattr(self, name), f"{prefix}.{name}")
        from transformers import SchedulerType

        known = [s.value for s in SchedulerType]
        check(self.lr_scheduler in known, f"{prefix}.lr_scheduler",
              f"unknown scheduler '{self.lr_scheduler}' (known: {', '.join(known)})")


@dataclass
class LoraSettings:
    """PEFT LoRA on the named linear layers; `enabled: false` trains every weight instead."""

    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def validate(self, prefix: str) -> None:
        check(self.r >= 1, f"{prefix}.r", f"LoRA rank must be >= 1, got {self.r}")
        check_positive(self.alpha, f"{prefix}.alpha")
        check_range(self.dropout, f"{prefix}.dropout", 0.0, 0.99)
        check(bool(self.target_modules), f"{prefix}.target_modules", "must name at least one module")


# Never adapt these through LoRA: on tied-embedding models (Qwen3-0.6B, the tiny default) the input
# embedding and the output head are one matrix, and an adapter on either breaks the tie at merge time.
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")


def lora_config(model, settings: LoraSettings, prefix: str, task_type: str = "CAUSAL_LM"):
    """PEFT LoraConfig for `model`, or None for full fine-tuning. Checks every target module exists."""
    if not settings.enabled:
        return None
    from peft import LoraConfig

    linear_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if type(module).__name__ in ("Linear", "Conv1D")}
    for i, target in enumerate(settings.target_modules):
        key = f"{prefix}.target_modules[{i}]"
        if target in EMBEDDING_MODULES:
            raise ConfigError(f"{key}: '{target}' is an embedding or output head; LoRA on it breaks tied "
                              "weights at merge (train it with lora.enabled: false instead)")
        if target not in linear_names:
            raise ConfigError(f"{key}: the model has no linear module named '{target}' "
                              f"(it has: {', '.join(sorted(linear_names))})")
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type=task_type,
    )


def trainer_kwargs(settings: TrainSettings, checkpoint_dir: Path, device: str, has_eval: bool) -> dict:
    """Arguments common to SFTConfig, RewardConfig and DPOConfig (all TrainingArguments)."""
    import torch

    from mathpipe.models import resolve_dtype

    bf16 = resolve_dtype(settings.dtype, device) == torch.bfloat16
    return dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=settings.grad_accumulation,
        max_length=settings.max_length,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        gradient_checkpointing=settings.gradient_checkpointing,
        bf16=bf16,
        use_cpu=device == "cpu",
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=settings.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        report_to=[],  # DVCLive is added as a callback, so its folder is ours to choose
        disable_tqdm=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA and full training use every trainable parameter
    )


def trainer_dataset(rows: list[dict], chat_template_kwargs: dict | None = None):
    """A TRL trainer's dataset: the rows, each with the template kwargs TRL reads per example; None if empty."""
    from datasets import Dataset

    return Dataset.from_list(prompts.with_template_kwargs(rows, chat_template_kwargs)) if rows else None


def check_pairs_fit(tokenizer, rows: list[dict], max_length: int, key: str,
                    chat_template_kwargs: dict | None = None) -> int:
    """Stop before training when a prompt + chosen or prompt + rejected sequence is longer than
    max_length: the trainer would cut the end of the answer and its EOS, the very tokens that tell
    chosen from rejected. Returns the longest sequence, in tokens."""
    texts = [prompts.render(tokenizer, list(row["prompt"]) + list(row[side]), chat_template_kwargs)
             for row in rows for side in ("chosen", "rejected")]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else [0]
    too_long = sum(n > max_length for n in lengths)
    if too_long:
        raise ConfigError(
            f"{key}: {max_length} tokens would cut {too_long} of {len(lengths)} sequences (prompt + answer; the "
            f"longest has {max(lengths)}): raise it to at least {max(lengths)}, or shorten the answers (pairs from "
            "rejection sampling run up to their prompt + rejection_sampling.generation.max_new_tokens)")
    return max(lengths)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def file_digest(path: str | Path | None) -> str | None:
    """Short content hash of a data file (part of a run's fingerprint); None if there is none."""
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_fingerprint(*parts) -> str:
    """A hash of everything that makes checkpoints of one run interchangeable (config, data, model)."""
    text = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_checkpoints(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The checkpoint to resume from, if the folder holds one from this exact configuration.

    A folder written by another configuration is cleared (resuming from it would mix two runs);
    either way the folder is stamped with `fingerprint` for the next attempt.
    """
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint_dir = Path(checkpoint_dir)
    stamp = checkpoint_dir / FINGERPRINT_FILE
    if checkpoint_dir.is_dir():
        previous = read_json(stamp).get("fingerprint") if stamp.is_file() else None
        if previous == fingerprint:
            last = get_last_checkpoint(str(checkpoint_dir))
            if last:
                log.info("resuming from %s", last)
                return last
        elif any(checkpoint_dir.iterdir()):
            log.info("%s holds checkpoints of another configuration; starting over", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"fingerprint": fingerprint})
    return None


def clear_checkpoints(checkpoint_dir: Path) -> None:
    """After a finished run: checkpoints only serve to resume an interrupted one.

    Keeping them would make a later re-run (say, after a code change) "resume" at the last step
    and skip training; for a real model they are also gigabytes. The stamp goes too: only an
    interrupted run leaves one.
    """
    for path in Path(checkpoint_dir).glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)
    (Path(checkpoint_dir) / FINGERPRINT_FILE).unlink(missing_ok=True)


def code_digest(*source_files: str | Path) -> str:
    """Hash of source files: part of a run's fingerprint, so checkpoints written by other training
    code are not resumed."""
    digest = hashlib.sha256()
    for path in source_files:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def prepare_checkpoints_everywhere(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """prepare_checkpoints in every process, the main one first: it alone may clear the folder,
    the others then find it stamped and agree on the checkpoint to resume from."""
    with distributed_state().main_process_first():
        return prepare_checkpoints(checkpoint_dir, fingerprint)


def training_callbacks(live_dir: str | Path, resume: bool) -> list:
    """DVCLive in the main process only: one writer of dvclive/<stage>."""
    return [dvclive_callback(live_dir, resume)] if is_main_process() else []


def save_trained(trainer, tokenizer, out_dir: str | Path) -> None:
    """trainer.save_model in every process (FSDP and ZeRO-3 gather the weights across them); the
    main process writes into a staging folder and moves it into place, so out_dir is never half
    written."""
    from transformers.trainer import TRAINING_ARGS_NAME

    state = distributed_state()
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    if state.is_main_process and staging.exists():
        shutil.rmtree(staging)
    state.wait_for_everyone()
    trainer.save_model(str(staging))
    state.wait_for_everyone()
    if state.is_main_process:
        # The Trainer also pickles its arguments there; they are in params.yaml already, a pickle is
        # unsafe to load, and this one differs from run to run, so the output would never hash the same.
        (staging / TRAINING_ARGS_NAME).unlink(missing_ok=True)
        canonical_adapter_config(staging)
        tokenizer.save_pretrained(str(staging))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    state.wait_for_everyone()


ADAPTER_SET_KEYS = ("target_modules", "exclude_modules")  # sets in PEFT's LoraConfig


def canonical_adapter_config(folder: Path) -> None:
    """PEFT saves target_modules, a set, in the order of this process's string hashes, which is
    random per process: sorted, the same adapter hashes the same in every run (DVC's cache, the lock)."""
    path = Path(folder) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ADAPTER_SET_KEYS:
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")  # PEFT's own layout


def training_device() -> str:
    """This process's device: cuda:<local rank> under a multi-GPU launch, cuda on one GPU, else cpu."""
    device = distributed_state().device
    return str(device) if device.type == "cuda" else "cpu"


def dvclive_callback(live_dir: str | Path, resume: bool):
    """transformers' DVCLiveCallback writing to `live_dir` (one folder per stage, declared as plots).

    Inside `dvc repro`/`dvc exp run`, DVCLive leaves experiment bookkeeping to DVC itself.
    """
    from dvc.scm import SCMError as DvcSCMError
    from scmrepo.exceptions import SCMError
    from transformers.integrations import DVCLiveCallback

    from dvclive import Live

    try:
        live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
    except (SCMError, DvcSCMError) as e:  # DVCLive reads HEAD: a repository with no commit fails
        raise PipelineError(f"DVCLive could not read the git repository ({e}): commit once "
                            "(git add -A && git commit) before running the training stages") from None
    return DVCLiveCallback(live=live)


def final_losses(log_history: list[dict]) -> dict:
    """Last logged train loss and eval loss from a Trainer's log history."""
    train = [h["loss"] for h in log_history if "loss" in h]
    evals = [h["eval_loss"] for h in log_history if "eval_loss" in h]
    return {"train_loss": train[-1] if train else None, "eval_loss": evals[-1] if evals else None}
