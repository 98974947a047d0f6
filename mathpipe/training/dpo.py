"""Direct preference optimisation with TRL's DPOTrainer: LoRA on top of the merged SFT model.

    summary = run_dpo(cfg)     # writes cfg.out_dir (the adapter), returns held-out figures

The reference policy is the same network with the adapter switched off (TRL does this when it gets a
peft_config and no ref_model), so only one copy of the weights is in memory. Pairs come from
`cfg.pairs`: prepare's or rejection sampling's files, or an external preference set in its own
schema (see mathpipe.data.pairs), from local files or a pinned Hub revision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mathpipe import prompts
from mathpipe.config import check, check_range
from mathpipe.data import pairs as pair_formats
from mathpipe.data import readers
from mathpipe.data.prepare import HubFiles, download_files, is_validation
from mathpipe.errors import DataError
from mathpipe.training import trainer

log = logging.getLogger(__name__)

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass(kw_only=True)
class PairSource:
    format: pair_formats.PairFormat
    train_files: str  # path or glob (inside the Hub snapshot if hub)
    val_files: str | None  # null: hold out val_fraction of train
    hub: HubFiles | None  # download train_files from a dataset repo at a pinned commit
    val_fraction: float
    split_seed: int
    template: str  # the user turn for external questions

    def validate(self, prefix: str) -> None:
        check_range(self.val_fraction, f"{prefix}.val_fraction", 0.0, 0.5)
        prompts.instruction(self.template)


@dataclass(kw_only=True)
class DPOStageConfig(trainer.TrainerStage):
    model: str
    pairs: PairSource
    max_train_samples: int | None
    max_val_samples: int | None
    out_dir: str
    checkpoint_dir: str
    live_dir: str

    TRL_CONFIG = "DPOConfig"  # train: beta, loss_type (one or several, with loss_weights), max_length, ...

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        key = f"{prefix}.train"
        if "beta" in self.train:
            beta = self.train["beta"]
            check(isinstance(beta, (int, float)) and beta > 0, f"{key}.beta", f"must be > 0, got {beta!r}")
        losses = self.train.get("loss_type", ["sigmoid"])
        losses = [losses] if isinstance(losses, str) else losses
        check(bool(losses), f"{key}.loss_type", "must name at least one loss")
        for i, loss in enumerate(losses):
            check(loss in DPO_LOSSES, f"{key}.loss_type[{i}]",
                  f"unknown DPO loss '{loss}' (known: {', '.join(DPO_LOSSES)})")
        weights = self.train.get("loss_weights")
        if weights is not None:
            check(len(weights) == len(losses), f"{key}.loss_weights",
                  f"needs one weight per loss_type entry ({len(losses)}), got {len(weights)}")
        check(self.train.get("train_sampling_strategy") != "group_by_length", f"{key}.train_sampling_strategy",
              "cannot be group_by_length: the Trainer can only group single sequences by length, not pairs")
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
    from trl import DPOTrainer

    from mathpipe.models import load_tokenizer, require_model_dir

    model_dir = require_model_dir(cfg.model, f"{prefix}.model")
    train_rows, val_rows = load_pair_splits(cfg.pairs, f"{prefix}.pairs", cfg.max_train_samples, cfg.max_val_samples,
                                            prompts.thinking(chat_template_kwargs))
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    device = trainer.training_device()
    args = cfg.arguments(prefix, device, has_eval=bool(val_rows))
    key = f"{prefix}.train.max_length"
    train = trainer.pairs_that_fit(tokenizer, train_rows, args.max_length, key, chat_template_kwargs, "training pairs")
    val = trainer.pairs_that_fit(tokenizer, val_rows, args.max_length, key, chat_template_kwargs, "held-out pairs")
    train_rows, val_rows = train.rows, val.rows
    run = trainer.run_trainer(
        cfg, prefix, DPOTrainer, args, trainer.policy_model(cfg, device), tokenizer, train_rows, val_rows,
        chat_template_kwargs=chat_template_kwargs, fingerprint_parts=(train_rows, val_rows), code_files=(__file__,),
        ref_model=None,  # with LoRA: the adapter-disabled model is the reference
    )
    held_out = run.eval_metrics
    return {
        **run.summary,
        "pairs_format": cfg.pairs.format,
        "train_pairs": len(train_rows),
        "val_pairs": len(val_rows),
        "pairs_too_long": train.dropped + val.dropped,  # left out: longer than train.max_length
        "longest_sequence_tokens": max(train.longest, val.longest),
        "beta": args.beta,
        "loss_type": list(args.loss_type),
        "loss_weights": args.loss_weights,
        "held_out": {
            "reward_accuracy": held_out.get("eval_rewards/accuracies"),
            "reward_margin": held_out.get("eval_rewards/margins"),
            "reward_chosen": held_out.get("eval_rewards/chosen"),
            "reward_rejected": held_out.get("eval_rewards/rejected"),
            "loss": held_out.get("eval_loss"),
        },
    }
