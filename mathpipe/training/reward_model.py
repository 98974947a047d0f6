"""A Bradley-Terry reward model: TRL's RewardTrainer on preference pairs, and scoring texts with it.

    summary = run_reward_model(cfg)          # trains, writes cfg.out_dir, returns held-out figures
    scorer = RewardScorer("models/reward")
    scorer.score(prompts, responses)          # one float per (question, response), batched
    mean_response_logprobs("models/sft", prompts, responses)   # the backbone's own likelihood baseline

The model is a sequence-classification head (one logit) over the base or SFT model. With LoRA the
adapter and the new head are trained, then merged, so cfg.out_dir is a standalone checkpoint.
Texts are scored as chat conversations rendered with the reward model's own tokenizer, so a reward
model need not share the policy's tokenizer.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mathpipe import prompts
from mathpipe.config import check, check_positive
from mathpipe.data.pairs import read_pairs
from mathpipe.io import atomic_dir
from mathpipe.training import trainer

log = logging.getLogger(__name__)

@dataclass(kw_only=True)
class RewardStageConfig(trainer.TrainerStage):
    model: str  # the backbone: models/base or models/sft
    train_file: str
    val_file: str
    max_train_samples: int | None
    max_val_samples: int | None
    out_dir: str
    checkpoint_dir: str
    live_dir: str
    score_batch_size: int
    likelihood_baseline: bool  # also rank the held-out pairs by the backbone LM's own likelihood

    TRL_CONFIG = "RewardConfig"

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        check(self.train.get("train_sampling_strategy") != "group_by_length", f"{prefix}.train.train_sampling_strategy",
              "cannot be group_by_length: the Trainer can only group single sequences by length, not pairs")
        for name in ("max_train_samples", "max_val_samples"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{prefix}.{name}", f"must be > 0 or null, got {value}")
        check_positive(self.score_batch_size, f"{prefix}.score_batch_size")


def load_pairs(path: str | Path, limit: int | None = None) -> list[dict]:
    """Conversational preference pairs {"prompt", "chosen", "rejected"} (TRL's form) from one file."""
    return read_pairs([Path(path)], "trl", limit=limit)


def conversation(prompt: str | list[dict], response: str | list[dict]) -> list[dict]:
    """A (question or chat prompt, answer text or assistant turns) pair as one list of chat turns."""
    turns = prompts.messages(prompt) if isinstance(prompt, str) else list(prompt)
    return turns + ([{"role": "assistant", "content": response}] if isinstance(response, str) else list(response))


class RewardScorer:
    """Scores (question or chat prompt, response) with a saved reward model, in batches."""

    def __init__(self, model_dir: str | Path, batch_size: int = 32, dtype: str = "auto",
                 trust_remote_code: bool = False, device: str | None = None,
                 chat_template_kwargs: dict | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        from mathpipe.models import default_device, load_tokenizer, require_model_dir, resolve_dtype

        self.device = device or default_device()
        model_dir = require_model_dir(model_dir)
        self.tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code, padding_side="right")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, dtype=resolve_dtype(dtype, self.device), use_safetensors=True,
            trust_remote_code=trust_remote_code,
        ).to(self.device).eval()
        self.batch_size = batch_size
        self.chat_template_kwargs = chat_template_kwargs
        self._torch = torch

    def render(self, prompt: str | list[dict], response: str | list[dict]) -> str:
        return prompts.render(self.tokenizer, conversation(prompt, response), self.chat_template_kwargs)

    def score(self, prompt_list: list, responses: list) -> list[float]:
        texts = [self.render(p, r) for p, r in zip(prompt_list, responses, strict=True)]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        scores = [0.0] * len(ids)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc="reward scores", unit="batch", leave=False, disable=len(batches) < 2):
            inputs = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(self.device)
            with self._torch.no_grad():
                logits = self.model(**inputs).logits[:, 0]
            for i, value in zip(batch, logits.float().tolist()):
                scores[i] = value
        return scores


def mean_response_logprobs(model_dir: str | Path, prompt_list: list, responses: list, batch_size: int = 8,
                           dtype: str = "auto", trust_remote_code: bool = False,
                           device: str | None = None, chat_template_kwargs: dict | None = None) -> list[float]:
    """Mean log-probability per response token under a causal LM, one float per (prompt, response).

    The prompt and response are rendered as one chat conversation, like RewardScorer does; the
    response tokens are those after the longest token prefix shared with the rendered prompt.
    """
    import torch

    from mathpipe.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir, trust_remote_code=trust_remote_code, padding_side="right")
    model = load_causal_lm(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    sequences = []
    for prompt, reply in zip(prompt_list, responses, strict=True):
        turns = conversation(prompt, [])
        head = prompts.render(tokenizer, turns, chat_template_kwargs, add_generation_prompt=True)
        full = prompts.render(tokenizer, conversation(prompt, reply), chat_template_kwargs)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        shared = next((i for i, (a, b) in enumerate(zip(head_ids, full_ids)) if a != b),
                      min(len(head_ids), len(full_ids)))
        sequences.append((full_ids, max(shared, 1)))
    means = []
    for start in tqdm(range(0, len(sequences), batch_size), desc="likelihood", unit="batch", leave=False,
                      disable=len(sequences) <= batch_size):
        batch = sequences[start:start + batch_size]
        inputs = tokenizer.pad({"input_ids": [ids for ids, _ in batch]}, return_tensors="pt").to(model.device)
        with torch.no_grad():
            logits = model(**inputs).logits
        for row, (ids, first) in enumerate(batch):
            # Token t is predicted at position t - 1: the response's tokens only, never padding.
            # One row at a time in float32, so a 150k-token vocabulary does not multiply the batch.
            predicted = torch.log_softmax(logits[row, first - 1:len(ids) - 1].float(), dim=-1)
            targets = inputs["input_ids"][row, first:len(ids), None]
            means.append(predicted.gather(-1, targets).mean().item())
    return means


def pairwise_metrics(chosen: list[float], rejected: list[float]) -> dict:
    """Held-out figures of a reward model: how often chosen outscores rejected, and by how much."""
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    n = len(margins)
    return {
        "pairs": n,
        "accuracy": sum(m > 0 for m in margins) / n if n else 0.0,
        "mean_margin": sum(margins) / n if n else 0.0,
        "mean_chosen": sum(chosen) / n if n else 0.0,
        "mean_rejected": sum(rejected) / n if n else 0.0,
    }


def run_reward_model(cfg: RewardStageConfig, prefix: str = "reward_model",
                     chat_template_kwargs: dict | None = None) -> dict:
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardTrainer

    from mathpipe.models import load_tokenizer, require_model_dir, resolve_dtype

    model_dir = require_model_dir(cfg.model, f"{prefix}.model")
    train_rows = load_pairs(cfg.train_file, cfg.max_train_samples)
    val_rows = load_pairs(cfg.val_file, cfg.max_val_samples)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="right")
    device = trainer.training_device()
    args = cfg.arguments(prefix, device)
    key = f"{prefix}.train.max_length"
    train = trainer.pairs_that_fit(tokenizer, train_rows, args.max_length, key, chat_template_kwargs, "training pairs")
    val = trainer.pairs_that_fit(tokenizer, val_rows, args.max_length, key, chat_template_kwargs, "held-out pairs")
    train_rows, val_rows = train.rows, val.rows
    # The one-logit head is new and randomly initialised here, before the Trainer seeds anything.
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1, dtype=resolve_dtype(cfg.dtype, device), use_safetensors=True,
        trust_remote_code=cfg.trust_remote_code,
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    data = (trainer.file_digest(cfg.train_file), trainer.file_digest(cfg.val_file))
    run = trainer.run_trainer(cfg, prefix, RewardTrainer, args, model, tokenizer, train_rows, val_rows,
                               chat_template_kwargs=chat_template_kwargs, fingerprint_parts=data,
                               code_files=(__file__,), task_type="SEQ_CLS", save=False)
    # Every process saves (trainer.save_model gathers FSDP and ZeRO-3 shards); the main one merges the
    # saved adapter (and its trained score head) into the backbone and writes the standalone model.
    trained_dir = Path(cfg.checkpoint_dir) / "trained"
    tokenizer.padding_side = "left"
    trainer.save_trained(run.trainer, tokenizer, trained_dir)
    state = trainer.distributed_state()
    if not state.is_main_process:
        return {"processes": state.num_processes}
    trained = AutoModelForSequenceClassification.from_pretrained(
        trained_dir if run.peft_config is None else model_dir, num_labels=1, dtype=resolve_dtype(cfg.dtype, device),
        use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
    trained.config.pad_token_id = tokenizer.pad_token_id
    if run.peft_config is not None:
        from peft import PeftModel

        trained = PeftModel.from_pretrained(trained, trained_dir).merge_and_unload()
    with atomic_dir(cfg.out_dir) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        scorer = RewardScorer(tmp, batch_size=cfg.score_batch_size, dtype=cfg.dtype,
                              trust_remote_code=cfg.trust_remote_code, device=device,
                              chat_template_kwargs=chat_template_kwargs)
        chosen = scorer.score([r["prompt"] for r in val_rows], [r["chosen"] for r in val_rows])
        rejected = scorer.score([r["prompt"] for r in val_rows], [r["rejected"] for r in val_rows])
    trainer.clear_checkpoints(Path(cfg.checkpoint_dir))
    shutil.rmtree(trained_dir, ignore_errors=True)
    held_out = pairwise_metrics(chosen, rejected)
    if cfg.likelihood_baseline:
        # What the backbone already knows: a trained reward model should rank pairs at least this well.
        ranked = [mean_response_logprobs(model_dir, [r["prompt"] for r in val_rows], [r[side] for r in val_rows],
                                         batch_size=args.per_device_eval_batch_size, dtype=cfg.dtype,
                                         trust_remote_code=cfg.trust_remote_code, device=device,
                                         chat_template_kwargs=chat_template_kwargs)
                  for side in ("chosen", "rejected")]
        held_out["likelihood_baseline_accuracy"] = pairwise_metrics(*ranked)["accuracy"]
    return {
        **run.summary,
        "backbone": str(model_dir),
        "train_pairs": len(train_rows),
        "pairs_too_long": train.dropped + val.dropped,  # left out: longer than train.max_length
        "longest_sequence_tokens": max(train.longest, val.longest),
        "held_out": held_out,
    }
