"""Supervised fine-tuning on the prepared chat records, with TRL's SFTTrainer and PEFT LoRA.

    summary = run_sft(cfg)     # writes cfg.out_dir (the adapter, or the full model), returns figures

The loss covers assistant tokens only: the chat template marks them with {% generation %}, and
each assistant turn ends with the template's end-of-turn token (the tokenizer's EOS), so the model
learns to stop. Checkpoints go to cfg.checkpoint_dir; a re-run after an interruption resumes there.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from mathpipe import training
from mathpipe.config import check
from mathpipe.errors import ConfigError, DataError
from mathpipe.io import read_jsonl
from mathpipe.launch import LaunchSettings
from mathpipe.training import (
    LoraSettings,
    TrainSettings,
    clear_checkpoints,
    code_digest,
    count_parameters,
    file_digest,
    final_losses,
    lora_config,
    run_fingerprint,
    trainer_kwargs,
)

log = logging.getLogger(__name__)

GENERATION_MARKER = "{% generation %}"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class SFTStageConfig:
    model: str = "models/base"
    train_file: str = "data/prepared/sft_train.jsonl"
    val_file: str | None = "data/prepared/sft_val.jsonl"
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    out_dir: str = "models/sft_adapter"
    checkpoint_dir: str = "checkpoints/sft"
    live_dir: str = "dvclive/sft"
    # a jinja file with {% generation %} markers, or trl:<file>, if the model's template lacks them
    chat_template: str | None = None
    trust_remote_code: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)  # processes: accelerate launch

    def validate(self, prefix: str) -> None:
        for name in ("max_train_samples", "max_val_samples"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{prefix}.{name}", f"must be > 0 or null, got {value}")


def load_messages(path: str | Path, limit: int | None) -> list[dict]:
    """Chat records ({"messages": [...]}) whose last turn is the assistant's target."""
    rows = read_jsonl(path, required=("messages",))
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError(f"{path}: no training records")
    for i, row in enumerate(rows, 1):
        msgs = row["messages"]
        if not (isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant"):
            raise DataError(f"{path}:{i}: column 'messages' must be a list of chat turns ending with the assistant's")
    return [{"messages": row["messages"]} for row in rows]


def chat_template_file(name: str, key: str) -> Path:
    """A jinja file, or `trl:<file>` for one of the templates TRL ships (trl/chat_templates/)."""
    if name.startswith("trl:"):
        import trl

        path = Path(trl.__file__).parent / "chat_templates" / name.removeprefix("trl:")
    else:
        path = Path(name)
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    return path


def training_tokenizer(model_dir: str, cfg: SFTStageConfig, prefix: str):
    """The model's tokenizer, padded on the right for training, with a template that marks targets."""
    from mathpipe.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    if cfg.chat_template is not None:
        template = chat_template_file(cfg.chat_template, f"{prefix}.chat_template")
        tokenizer.chat_template = template.read_text(encoding="utf-8")
    if not _GENERATION_TAG.search(tokenizer.chat_template or ""):
        raise ConfigError(
            f"{prefix}.chat_template: the chat template of {model_dir} has no {GENERATION_MARKER} markers, so "
            "the loss cannot be limited to assistant tokens; point this key at a template that has them "
            "(TRL ships one for Qwen3: trl:qwen3_training.jinja)"
        )
    return tokenizer


def run_sft(cfg: SFTStageConfig, prefix: str = "sft", callbacks: list | None = None,
            chat_template_kwargs: dict | None = None) -> dict:
    from trl import SFTConfig, SFTTrainer

    from mathpipe.models import load_causal_lm, read_origin, require_model_dir

    model_dir = require_model_dir(cfg.model)
    train_rows = load_messages(cfg.train_file, cfg.max_train_samples)
    val_rows = load_messages(cfg.val_file, cfg.max_val_samples) if cfg.val_file else []
    tokenizer = training_tokenizer(str(model_dir), cfg, prefix)
    device = training.training_device()
    model = load_causal_lm(model_dir, dtype=cfg.train.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    model.train()
    peft_config = lora_config(model, cfg.lora, f"{prefix}.lora")

    code = code_digest(__file__, training.__file__)
    data = (file_digest(cfg.train_file), file_digest(cfg.val_file))
    fingerprint = run_fingerprint(cfg, code, read_origin(model_dir), data, chat_template_kwargs or {})
    resume = training.prepare_checkpoints_everywhere(Path(cfg.checkpoint_dir), fingerprint)
    args = SFTConfig(
        **trainer_kwargs(cfg.train, Path(cfg.checkpoint_dir), device, has_eval=bool(val_rows)),
        assistant_only_loss=True,
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=training.trainer_dataset(train_rows, chat_template_kwargs),
        eval_dataset=training.trainer_dataset(val_rows, chat_template_kwargs),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[*training.training_callbacks(cfg.live_dir, resume=resume is not None), *(callbacks or [])],
    )
    trainable, total = count_parameters(trainer.model)
    log.info("training %d of %d parameters (%s) on %d records", trainable, total,
             "LoRA" if peft_config else "full", len(train_rows))
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    eval_metrics = trainer.evaluate() if val_rows else {}

    tokenizer.padding_side = "left"  # the saved tokenizer serves generation
    training.save_trained(trainer, tokenizer, cfg.out_dir)
    if training.is_main_process():
        clear_checkpoints(Path(cfg.checkpoint_dir))
    # TRL logs a running count of the (non-padding) tokens trained on; after a resume the history
    # includes the steps before the interruption, which this run's seconds do not. The count either
    # goes on from the checkpoint's or starts again from 0 (its state is not always restored).
    resumed_step = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
    counts = [(h["step"], h["num_tokens"]) for h in trainer.state.log_history if "loss" in h and "num_tokens" in h]
    before = max((n for step, n in counts if step <= resumed_step), default=0)
    after = [n for step, n in counts if step > resumed_step]
    tokens = (max(after) - (before if after[0] > before else 0)) if after else 0
    losses = final_losses(trainer.state.log_history)
    processes = training.distributed_state().num_processes
    return {
        "method": "lora" if peft_config else "full",
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 4),
        "train_records": len(train_rows),
        "val_records": len(val_rows),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_seconds": round(seconds, 2),
        "train_tokens": int(tokens) if tokens else None,
        "tokens_per_second": round(tokens / seconds, 1) if tokens and seconds else None,
        "train_loss": losses["train_loss"],
        "train_loss_mean": result.metrics.get("train_loss"),
        "eval_loss": eval_metrics.get("eval_loss", losses["eval_loss"]),
        "resumed_from": Path(resume).name if resume else None,
        "device": device,
        "processes": processes,
        "global_batch_size": cfg.train.batch_size * cfg.train.grad_accumulation * processes,
    }
