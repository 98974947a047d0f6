"""Direct preference optimisation with TRL's DPOTrainer: LoRA on top of the merged SFT model.

    summary = run_dpo(cfg)     # writes cfg.out_dir (the adapter), returns held-out figures

The reference policy is the same network with the adapter switched off (TRL does this when it gets a
peft_config and no ref_model), so only one copy of the weights is in memory. Pairs come from
`cfg.pairs`: prepare's or rejection sampling's files, or an external preference set in its own
schema (see mathpipe.data.pairs), from local files or a pinned Hub revision.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from mathpipe import prompts, training
from mathpipe.config import check, check_positive, check_range
from mathpipe.data import pairs as pair_formats
from mathpipe.data import readers
from mathpipe.data.prepare import HubFiles, download_files, is_validation
from mathpipe.errors import DataError
from mathpipe.launch import LaunchSettings
from mathpipe.training import (
    LoraSettings,
    TrainSettings,
    clear_checkpoints,
    code_digest,
    count_parameters,
    final_losses,
    lora_config,
    run_fingerprint,
    trainer_kwargs,
)

log = logging.getLogger(__name__)

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class PairSource:
    format: pair_formats.PairFormat = "trl"
    train_files: str = "data/prepared/pairs_train.jsonl"  # path or glob (inside the Hub snapshot if hub)
    val_files: str | None = "data/prepared/pairs_val.jsonl"  # null: hold out val_fraction of train
    hub: HubFiles | None = None  # download train_files from a dataset repo at a pinned commit
    val_fraction: float = 0.05
    split_seed: int = 0
    template: str = prompts.DEFAULT_TEMPLATE  # the user turn for external questions

    def validate(self, prefix: str) -> None:
        check_range(self.val_fraction, f"{prefix}.val_fraction", 0.0, 0.5)
        prompts.instruction(self.template)


@dataclass
class DPOStageConfig:
    model: str = "models/sft"
    pairs: PairSource = field(default_factory=PairSource)
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    out_dir: str = "models/dpo_adapter"
    checkpoint_dir: str = "checkpoints/dpo"
    live_dir: str = "dvclive/dpo"
    beta: float = 0.1
    # One loss or a weighted sum: [sigmoid, sft] with loss_weights [1.0, 1.0] adds the chosen answer's
    # NLL to DPO (as in RPO / iterative reasoning preference optimisation), which keeps DPO from
    # lowering the likelihood of correct solutions along with the rejected ones.
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    trust_remote_code: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    launch: LaunchSettings = field(default_factory=LaunchSettings)  # processes: accelerate launch

    def validate(self, prefix: str) -> None:
        check_positive(self.beta, f"{prefix}.beta")
        check(bool(self.loss_type), f"{prefix}.loss_type", "must name at least one loss")
        for i, loss in enumerate(self.loss_type):
            check(loss in DPO_LOSSES, f"{prefix}.loss_type[{i}]",
                  f"unknown DPO loss '{loss}' (known: {', '.join(DPO_LOSSES)})")
        if self.loss_weights is not None:
            check(len(self.loss_weights) == len(self.loss_type), f"{prefix}.loss_weights",
                  f"needs one weight per loss_type entry ({len(self.loss_type)}), got {len(self.loss_weights)}")
        check(not self.train.group_by_length, f"{prefix}.train.group_by_length",
              "must be false: the Trainer can only group single sequences by length, not pairs")
        for name in ("max_train_samples", "max_val_samples"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{prefix}.{name}", f"must be > 0 or null, got {value}")


def load_pair_splits(src: PairSource, prefix: str, max_train: int | None, max_val: int | None,
                     thinking: bool = True):
    """(train, val) pairs in TRL's conversational form, every file found before any is read."""
    def find(pattern: str, key: str) -> list[Path]:
        try:
            return readers.expand_paths(pattern)
        except DataError as e:
            raise DataError(f"{prefix}.{key}: {e}") from None

    if src.hub is not None:
        train_paths = download_files(HubFiles(src.hub.repo, src.hub.revision, src.train_files), f"{prefix}.hub")
        if not train_paths:
            raise DataError(f"{prefix}.train_files: no file in {src.hub.repo} matches '{src.train_files}'")
    else:
        train_paths = find(src.train_files, "train_files")
    val_paths = find(src.val_files, "val_files") if src.val_files and src.hub is None else []
    train = pair_formats.read_pairs(train_paths, src.format, src.template, thinking=thinking)
    if val_paths:
        val = pair_formats.read_pairs(val_paths, src.format, src.template, thinking=thinking)
    else:  # hold out a deterministic share of the prompts
        def key(pair: dict) -> str:
            return " ".join(turn["content"] for turn in pair["prompt"])

        val = [p for p in train if is_validation(key(p), src.val_fraction, src.split_seed)]
        train = [p for p in train if not is_validation(key(p), src.val_fraction, src.split_seed)]
    train, val = train[:max_train] if max_train else train, val[:max_val] if max_val else val
    if not train:
        raise DataError(f"{prefix}: no training pairs left after the validation split")
    return train, val


def run_dpo(cfg: DPOStageConfig, prefix: str = "dpo", chat_template_kwargs: dict | None = None) -> dict:
    from trl import DPOConfig, DPOTrainer

    from mathpipe.models import load_causal_lm, load_tokenizer, read_origin, require_model_dir

    model_dir = require_model_dir(cfg.model)
    train_rows, val_rows = load_pair_splits(cfg.pairs, f"{prefix}.pairs", cfg.max_train_samples, cfg.max_val_samples,
                                            prompts.thinking(chat_template_kwargs))
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    longest = training.check_pairs_fit(tokenizer, train_rows + val_rows, cfg.train.max_length,
                                       f"{prefix}.train.max_length", chat_template_kwargs)
    device = training.training_device()
    model = load_causal_lm(model_dir, dtype=cfg.train.dtype, device=device, trust_remote_code=cfg.trust_remote_code)
    model.train()
    peft_config = lora_config(model, cfg.lora, f"{prefix}.lora")

    code = code_digest(__file__, training.__file__)
    fingerprint = run_fingerprint(cfg, code, read_origin(model_dir), train_rows, val_rows, chat_template_kwargs or {})
    resume = training.prepare_checkpoints_everywhere(Path(cfg.checkpoint_dir), fingerprint)
    args = DPOConfig(
        **trainer_kwargs(cfg.train, Path(cfg.checkpoint_dir), device, has_eval=bool(val_rows)),
        beta=cfg.beta,
        loss_type=list(cfg.loss_type),
        loss_weights=cfg.loss_weights,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with LoRA: the adapter-disabled model is the reference
        args=args,
        train_dataset=training.trainer_dataset(train_rows, chat_template_kwargs),
        eval_dataset=training.trainer_dataset(val_rows, chat_template_kwargs),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=training.training_callbacks(cfg.live_dir, resume=resume is not None),
    )
    trainable, total = count_parameters(trainer.model)
    log.info("DPO on %d pairs (%d held out), %d of %d parameters trained, beta %g, loss %s",
             len(train_rows), len(val_rows), trainable, total, cfg.beta, cfg.loss_type)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    held_out = trainer.evaluate() if val_rows else {}

    tokenizer.padding_side = "left"
    training.save_trained(trainer, tokenizer, cfg.out_dir)
    if training.is_main_process():
        clear_checkpoints(Path(cfg.checkpoint_dir))
    losses = final_losses(trainer.state.log_history)
    return {
        "method": "lora" if peft_config else "full",
        "pairs_format": cfg.pairs.format,
        "train_pairs": len(train_rows),
        "val_pairs": len(val_rows),
        "longest_sequence_tokens": longest,
        "beta": cfg.beta,
        "loss_type": cfg.loss_type,
        "loss_weights": cfg.loss_weights,
        "steps": trainer.state.global_step,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_seconds": round(seconds, 2),
        "train_loss": losses["train_loss"],
        "processes": training.distributed_state().num_processes,
        "resumed_from": Path(resume).name if resume else None,
        "held_out": {
            "reward_accuracy": held_out.get("eval_rewards/accuracies"),
            "reward_margin": held_out.get("eval_rewards/margins"),
            "reward_chosen": held_out.get("eval_rewards/chosen"),
            "reward_rejected": held_out.get("eval_rewards/rejected"),
            "loss": held_out.get("eval_loss"),
        },
    }
