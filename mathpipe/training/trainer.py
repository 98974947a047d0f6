"""The one training skeleton of the trainer stages (sft, reward_model, dpo, grpo), on TRL's trainers.

    cfg = load_section("dpo", DPOStageConfig)                  # a TrainerStage: model, lora, train, ...
    args = cfg.arguments("dpo", device)                         # TRL's DPOConfig, every check TRL makes
    run = run_trainer(cfg, "dpo", DPOTrainer, args, model, tokenizer, train_dataset, eval_dataset,
                      fingerprint_parts=(train_rows, val_rows), code_files=(__file__,))
    run.summary                                                 # steps, tokens, seconds, losses, ...

A stage brings only what is its own: its data, its model class, its trainer and the trainer's extra
arguments (reward functions, ...). `train:` in params.yaml is the TRL config's own arguments, verbatim
(`per_device_train_batch_size`, `gradient_accumulation_steps`, `num_train_epochs`, `learning_rate`,
`lr_scheduler_type`, `beta`, `num_generations`, ...): a key a TRL user knows works as TRL documents it,
an unknown one is one ConfigError naming it, and what params.yaml leaves out is TRL's default except
PIPELINE_DEFAULTS. The skeleton loads LoRA, resumes from the last checkpoint of this exact
configuration (a folder written by another configuration is cleared instead), logs to DVCLive, saves
the result atomically and measures the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mathpipe import prompts
from mathpipe.config import check, check_positive, check_range
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.io import read_json, write_json
from mathpipe.training.launch import LaunchSettings, distributed_state, is_main_process
from mathpipe.training.trl_args import check_arguments, trl_config

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "mathpipe-run.json"  # in the checkpoint folder: which configuration wrote it


# Set by the pipeline, never by params: where checkpoints go, logging, the device and precision.
OWNED_ARGUMENTS = ("output_dir", "report_to", "use_cpu", "bf16", "fp16", "disable_tqdm")
# Where TRL's defaults do not suit this pipeline (one CPU process by default, checkpoints to resume
# from); params.yaml may still set any of them.
PIPELINE_DEFAULTS = dict(dataloader_num_workers=0, save_strategy="steps", save_total_limit=2, logging_steps=1,
                         ddp_find_unused_parameters=False)  # LoRA and full training use every parameter
# Keys the pipeline's train: sections had before they took TRL's names, where the rename is not a close match.
MOVED_KEYS = {"dtype": "the stage's own dtype key (auto | float32 | bfloat16), beside train:",
              "group_by_length": "train_sampling_strategy: group_by_length"}
POSITIVE_ARGUMENTS = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                      "logging_steps", "eval_steps", "save_steps", "save_total_limit", "max_length")


@dataclass(kw_only=True)
class TrainerStage:
    """The keys every trainer stage's section has; each stage's config adds its data keys."""

    model: str
    out_dir: str
    metrics: str  # the stage's figures, a JSON file kept in git
    checkpoint_dir: str  # Trainer checkpoints, kept only to resume an interrupted run
    live_dir: str  # DVCLive's curves (dvc plots show)
    dtype: Literal["auto", "float32", "bfloat16"]  # auto: bf16 on CUDA, fp32 on CPU
    trust_remote_code: bool
    lora: dict[str, Any] | None  # PEFT's LoraConfig arguments, in PEFT's names; null: full fine-tuning
    train: dict[str, Any]  # the TRL config's arguments, in TRL's names
    launch: LaunchSettings  # processes: accelerate launch

    TRL_CONFIG: ClassVar[str] = "SFTConfig"  # the trl class `train` is checked against
    OWNED: ClassVar[dict] = {}  # the stage's own fixed arguments (SFT: assistant-only loss), not params

    def trl_config_class(self):
        import trl

        return getattr(trl, self.TRL_CONFIG)

    def ddp_timeout(self) -> int:
        """Seconds a collective may wait: train.ddp_timeout, else TRL's (transformers') default."""
        return self.train.get("ddp_timeout", self.trl_config_class().__dataclass_fields__["ddp_timeout"].default)

    def validate(self, prefix: str) -> None:
        """Names and the plain ranges now, with the key; `arguments` runs TRL's own checks."""
        if self.lora is not None:
            check_lora(self.lora, f"{prefix}.lora")
        key = f"{prefix}.train"
        for name, instead in MOVED_KEYS.items():
            check(name not in self.train, f"{key}.{name}", f"not an argument of TRL's {self.TRL_CONFIG}: use {instead}")
        check_arguments(self.trl_config_class(), self.train, key, (*OWNED_ARGUMENTS, *self.OWNED))
        train = self.train
        if "learning_rate" in train:
            check_positive(train["learning_rate"], f"{key}.learning_rate")
        for name in POSITIVE_ARGUMENTS:
            if train.get(name) is not None:
                value = train[name]
                check(isinstance(value, int) and value > 0, f"{key}.{name}", f"must be an integer > 0, got {value!r}")
        if "lr_scheduler_type" in train:
            from transformers import SchedulerType

            known = [s.value for s in SchedulerType]
            check(train["lr_scheduler_type"] in known, f"{key}.lr_scheduler_type",
                  f"unknown scheduler '{train['lr_scheduler_type']}' (known: {', '.join(known)})")
        epochs, steps = train.get("num_train_epochs", 3.0), train.get("max_steps", -1)
        check(steps == -1 or (isinstance(steps, int) and steps > 0), f"{key}.max_steps",
              "must be -1 (use epochs) or > 0")
        check(steps > 0 or epochs > 0, f"{key}.num_train_epochs", f"must be > 0, got {epochs}")

    def arguments(self, prefix: str, device: str = "cpu", has_eval: bool = True, **owned):
        """The TRL config to train with: PIPELINE_DEFAULTS, then params, then what the pipeline owns."""
        import torch

        from mathpipe.models import resolve_dtype

        owned = dict(output_dir=self.checkpoint_dir, report_to=[], use_cpu=device == "cpu",
                     bf16=resolve_dtype(self.dtype, device) == torch.bfloat16, fp16=False, disable_tqdm=False,
                     **self.OWNED, **owned)
        defaults = dict(PIPELINE_DEFAULTS)
        if has_eval:
            defaults["eval_strategy"] = "steps"
        else:
            owned["eval_strategy"] = "no"
        return trl_config(self.trl_config_class(), self.train, f"{prefix}.train", owned, defaults)


# Never adapt these through LoRA: on tied-embedding models (Qwen3-0.6B, the tiny default) the input
# embedding and the output head are one matrix, and an adapter on either breaks the tie at merge time.
EMBEDDING_MODULES = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out")


def check_lora(lora: dict[str, Any], prefix: str) -> None:
    """`lora:` is PEFT's LoraConfig in its own argument names (r, lora_alpha, lora_dropout,
    target_modules, ...): an unknown key names itself with the closest names; task_type is the stage's."""
    from peft import LoraConfig

    check_arguments(LoraConfig, lora, prefix, owned=("task_type",))
    # PEFT would pick its own targets for the architecture (q_proj and v_proj for Qwen3), silently: a
    # profile that sets r and alpha over a section whose default is null (full fine-tuning) gets no
    # target_modules from the default and must say which modules it means.
    check(lora.get("target_modules") is not None, f"{prefix}.target_modules",
          "missing: name the modules LoRA adapts (a list, or 'all-linear'); with lora: null the stage "
          "fine-tunes every weight instead")
    if "r" in lora:
        check(isinstance(lora["r"], int) and lora["r"] >= 1, f"{prefix}.r",
              f"LoRA rank must be >= 1, got {lora['r']!r}")
    if "lora_alpha" in lora:
        check_positive(lora["lora_alpha"], f"{prefix}.lora_alpha")
    if "lora_dropout" in lora:
        check_range(lora["lora_dropout"], f"{prefix}.lora_dropout", 0.0, 0.99)
    if isinstance(lora.get("target_modules"), list):
        check(bool(lora["target_modules"]), f"{prefix}.target_modules", "must name at least one module")


def lora_config(model, lora: dict[str, Any] | None, prefix: str, task_type: str = "CAUSAL_LM"):
    """PEFT LoraConfig for `model`, or None for full fine-tuning. Checks every target module exists."""
    if lora is None:
        return None
    from peft import LoraConfig

    check_lora(lora, prefix)
    linear_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                    if type(module).__name__ in ("Linear", "Conv1D")}
    targets = lora.get("target_modules")
    for i, target in enumerate(targets if isinstance(targets, list) else []):
        key = f"{prefix}.target_modules[{i}]"
        if target in EMBEDDING_MODULES:
            raise ConfigError(f"{key}: '{target}' is an embedding or output head; LoRA on it breaks tied "
                              f"weights at merge (train it with {prefix}: null, full fine-tuning, instead)")
        if target not in linear_names:
            raise ConfigError(f"{key}: the model has no linear module named '{target}' "
                              f"(it has: {', '.join(sorted(linear_names))})")
    return trl_config(LoraConfig, lora, prefix, owned={"task_type": task_type})


def trainer_dataset(rows: list[dict], chat_template_kwargs: dict | None = None):
    """A TRL trainer's dataset: the rows, each with the template kwargs TRL reads per example; None if empty."""
    from datasets import Dataset

    return Dataset.from_list(prompts.with_template_kwargs(rows, chat_template_kwargs)) if rows else None


@dataclass
class FittedPairs:
    rows: list[dict]  # the pairs whose prompt + chosen and prompt + rejected both fit
    dropped: int  # pairs left out: one side longer than max_length
    longest: int  # the longest sequence kept, in tokens


def pairs_that_fit(tokenizer, rows: list[dict], max_length: int, key: str,
                   chat_template_kwargs: dict | None = None, what: str = "pairs") -> FittedPairs:
    """The pairs whose prompt + chosen and prompt + rejected sequences both fit max_length, before
    training: the trainer would cut the end of a longer answer and its EOS, the very tokens that tell
    chosen from rejected. One long pair (a long problem with a long answer) is left out and counted,
    so it cannot stop a run hours in; a set with no pair left is an error naming `key`."""
    texts = [prompts.render(tokenizer, list(row["prompt"]) + list(row[side]), chat_template_kwargs)
             for row in rows for side in ("chosen", "rejected")]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    pair_lengths = [max(lengths[2 * i], lengths[2 * i + 1]) for i in range(len(rows))]
    kept = [row for row, n in zip(rows, pair_lengths) if n <= max_length]
    if rows and not kept:
        raise ConfigError(f"{key}: {max_length} tokens fit none of the {len(rows)} {what} (prompt + answer; the "
                          f"shortest pair has {min(pair_lengths)}): raise it, or shorten the answers (pairs from "
                          "rejection sampling run up to their prompt + rejection_sampling.generation.max_new_tokens)")
    dropped = len(rows) - len(kept)
    if dropped:
        log.warning("%s: %d of %d %s are longer than %d tokens (the longest has %d) and are left out",
                    key, dropped, len(rows), what, max_length, max(pair_lengths))
    return FittedPairs(kept, dropped, max((n for n in pair_lengths if n <= max_length), default=0))


def trainable_in_float32(model) -> list[str]:
    """Cast every trainable parameter that is not float32 to float32, in place; returns their names.

    A model loaded in bf16 trains its own copy of the weights in bf16 otherwise: at lr 5e-5 an AdamW
    step is below half a bf16 ulp for every weight with |w| >= 2**-6, and rounds to nothing. PEFT
    upcasts LoRA's layers itself, not modules_to_save (the reward model's new score head); full
    fine-tuning upcasts them all (fp32 master weights, bf16 autocast in the forward pass)."""
    import torch

    cast = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            cast.append(name)
    return cast


def trainable_dtype(model) -> str:
    """The dtype(s) of the trainable parameters, as one string ("float32")."""
    return ", ".join(sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad}))


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


@dataclass
class TrainingRun:
    """What run_trainer leaves a stage: the trainer (its model and state) and the run's figures."""

    trainer: Any
    peft_config: Any
    eval_metrics: dict
    summary: dict


def policy_model(cfg: TrainerStage, device: str):
    """cfg.model as a causal LM in training mode, in cfg.dtype on `device`."""
    from mathpipe.models import load_causal_lm

    model = load_causal_lm(cfg.model, dtype=cfg.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    model.train()
    return model


def run_trainer(cfg: TrainerStage, prefix: str, trainer_class, args, model, tokenizer, train_rows: list[dict],
                val_rows: list[dict] | None = None, *, chat_template_kwargs: dict | None = None,
                fingerprint_parts: tuple = (), code_files: tuple = (), task_type: str = "CAUSAL_LM",
                callbacks: tuple | list = (), save: bool = True, **trainer_extra) -> TrainingRun:
    """LoRA, resume, train, evaluate (when there are val_rows), save: what every trainer stage shares.

    `fingerprint_parts` (the data, or digests of its files) and `code_files` (the stage's module)
    decide, with cfg, the template kwargs and the model's origin, which checkpoints may be resumed
    from. With save=False the stage writes cfg.out_dir itself (and clears the checkpoints after)."""
    from mathpipe.models import read_origin

    train_dataset = trainer_dataset(train_rows, chat_template_kwargs)
    eval_dataset = trainer_dataset(val_rows or [], chat_template_kwargs)
    peft_config = lora_config(model, cfg.lora, f"{prefix}.lora", task_type=task_type)
    code = code_digest(__file__, *code_files)
    fingerprint = run_fingerprint(cfg, code, read_origin(cfg.model), *fingerprint_parts, chat_template_kwargs or {})
    resume = prepare_checkpoints_everywhere(Path(cfg.checkpoint_dir), fingerprint)
    trainer = trainer_class(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, peft_config=peft_config,
        callbacks=[*training_callbacks(cfg.live_dir, resume=resume is not None), *callbacks], **trainer_extra,
    )
    upcast = trainable_in_float32(trainer.model)
    if upcast:
        log.info("%s: %d trainable tensors upcast to float32 (e.g. %s); the frozen weights stay in %s", prefix,
                 len(upcast), upcast[0], cfg.dtype)
    trainable, total = count_parameters(trainer.model)
    log.info("%s: %s on %d examples, %d of %d parameters trained", prefix, trainer_class.__name__,
             len(train_dataset), trainable, total)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    eval_metrics = trainer.evaluate() if eval_dataset is not None else {}
    if save:
        tokenizer.padding_side = "left"  # the saved tokenizer serves generation
        save_trained(trainer, tokenizer, cfg.out_dir)
        if is_main_process():
            clear_checkpoints(Path(cfg.checkpoint_dir))

    history = trainer.state.log_history
    tokens = trained_tokens(history, resume)
    losses = final_losses(history)
    processes = distributed_state().num_processes
    summary = {
        "method": "lora" if peft_config else "full",
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "trainable_parameters": trainable,
        "trainable_dtype": trainable_dtype(trainer.model),
        "total_parameters": total,
        "train_seconds": round(seconds, 2),
        "train_tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds else None,
        "train_loss": losses["train_loss"],
        "eval_loss": eval_metrics.get("eval_loss", losses["eval_loss"]),
        "device": training_device(),
        "processes": processes,
        "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * processes,
        "resumed_from": Path(resume).name if resume else None,
    }
    return TrainingRun(trainer, peft_config, eval_metrics, summary)


def trained_tokens(log_history: list[dict], resume: str | None) -> int | None:
    """The tokens this run trained on (TRL logs a running `num_tokens`: prompt + completion, no padding).

    After a resume the history includes the steps before the interruption, which this run's seconds
    do not; the count either goes on from the checkpoint's or starts again from 0 (its state is not
    always restored)."""
    resumed_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
    counts = [(h["step"], h["num_tokens"]) for h in log_history if "loss" in h and "num_tokens" in h]
    before = max((n for step, n in counts if step <= resumed_step), default=0)
    after = [n for step, n in counts if step > resumed_step]
    tokens = (max(after) - (before if after[0] > before else 0)) if after else 0
    return int(tokens) if tokens else None
