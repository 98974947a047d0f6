"""Supervised fine-tuning on the prepared chat records, with TRL's SFTTrainer and PEFT LoRA.

    summary = run_sft(cfg)     # writes cfg.out_dir (the adapter, or the full model), returns figures

The loss covers assistant tokens only: the chat template marks them with {% generation %}, and
each assistant turn ends with the template's end-of-turn token (the tokenizer's EOS), so the model
learns to stop. Checkpoints go to cfg.checkpoint_dir; a re-run after an interruption resumes there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from mathpipe import prompts
from mathpipe.config import check
from mathpipe.errors import ConfigError, DataError
from mathpipe.io import read_jsonl
from mathpipe.training import trainer

log = logging.getLogger(__name__)

GENERATION_MARKER = "{% generation %}"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass(kw_only=True)
class SFTStageConfig(trainer.TrainerStage):
    model: str
    train_file: str
    val_file: str | None
    max_train_samples: int | None
    max_val_samples: int | None
    out_dir: str
    checkpoint_dir: str
    live_dir: str
    # a jinja file with {% generation %} markers, or trl:<file>, if the model's template lacks them
    chat_template: str | None

    TRL_CONFIG = "SFTConfig"
    # The loss covers the assistant's tokens only, one conversation per sequence.
    OWNED = dict(assistant_only_loss=True, packing=False)

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
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


def training_tokenizer(model_dir: str, cfg: SFTStageConfig, prefix: str):
    """The model's tokenizer, padded on the right for training, with a template that marks targets."""
    from mathpipe.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    if cfg.chat_template is not None:
        template = prompts.chat_template_file(cfg.chat_template, f"{prefix}.chat_template")
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
    from trl import SFTTrainer

    from mathpipe.models import require_model_dir

    model_dir = require_model_dir(cfg.model, f"{prefix}.model")
    train_rows = load_messages(cfg.train_file, cfg.max_train_samples)
    val_rows = load_messages(cfg.val_file, cfg.max_val_samples) if cfg.val_file else []
    tokenizer = training_tokenizer(str(model_dir), cfg, prefix)
    device = trainer.training_device()
    args = cfg.arguments(prefix, device, has_eval=bool(val_rows))
    run = trainer.run_trainer(
        cfg, prefix, SFTTrainer, args, trainer.policy_model(cfg, device), tokenizer, train_rows, val_rows,
        chat_template_kwargs=chat_template_kwargs, code_files=(__file__,), callbacks=callbacks or (),
        fingerprint_parts=(trainer.file_digest(cfg.train_file), trainer.file_digest(cfg.val_file)),
    )
    return {**run.summary, "train_records": len(train_rows), "val_records": len(val_rows)}
