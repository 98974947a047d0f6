"""A short causal-LM pre-training of the tiny base model on the training corpus, as plain text.

    summary = pretrain(model, tokenizer, texts, settings)

Real base models (Qwen3, Llama) have read a great deal of text, arithmetic included, before anyone
fine-tunes them, and LoRA adapts what they know. A tiny model from random weights knows nothing, and
LoRA alone teaches it too slowly to show anything in minutes. So the default base model first reads
the training problems and their reference solutions as plain text (no chat template, no
instruction, no `<think>`): it learns the language and the arithmetic, not the answer format, and
still scores about zero on the chat-formatted benchmarks until SFT teaches it the format. Test
problems are never in the corpus.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass

from mathpipe.config import check, check_positive

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PretrainSettings:
    epochs: float  # 0: no pre-training (a randomly initialised base)
    learning_rate: float
    batch_size: int
    warmup_steps: int
    max_length: int  # tokens per text

    def validate(self, prefix: str) -> None:
        check(self.epochs >= 0, f"{prefix}.epochs", f"must be >= 0, got {self.epochs}")
        check_positive(self.learning_rate, f"{prefix}.learning_rate")
        check_positive(self.batch_size, f"{prefix}.batch_size")
        check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check_positive(self.max_length, f"{prefix}.max_length")


def pretrain(model, tokenizer, texts: list[str], settings: PretrainSettings, seed: int) -> dict:
    """Train `model` in place on `texts` (next-token loss on every token); return its figures.

    transformers' own causal-LM recipe (Trainer + DataCollatorForLanguageModeling, as in its run_clm
    example): each text is one sequence ending with EOS. TRL's SFTTrainer would do the same job, but it
    always computes the loss through its chunked log-prob head, made for large vocabularies; on this
    CPU, with 1,024 tokens, that head made a pre-training step 37% slower than the model's own loss.
    """
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=settings.max_length - 1)
    dataset = Dataset.from_dict({"input_ids": [ids + [eos] for ids in encoded["input_ids"]]})
    tokenizer.padding_side = "right"
    with tempfile.TemporaryDirectory(prefix="mathpipe-pretrain-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            num_train_epochs=settings.epochs,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=settings.warmup_steps,
            train_sampling_strategy="group_by_length",
            bf16=False,  # the tiny model is pre-trained in float32 (CPU) and saved so
            use_cpu=True,  # a 1M-parameter model: a GPU would only add transfers, and CPU keeps it reproducible
            save_strategy="no",
            report_to=[],
            logging_steps=50,
            include_num_input_tokens_seen="non_padding",
            seed=seed,
            data_seed=seed,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset,
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
        started = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - started
    tokenizer.padding_side = "left"
    model.eval()
    log.info("pre-trained on %d texts: %d steps, loss %.3f, %.0f s", len(texts), trainer.state.global_step,
             result.metrics["train_loss"], seconds)
    return {
        "pretrain_texts": len(texts),
        "pretrain_steps": trainer.state.global_step,
        "pretrain_tokens": int(trainer.state.num_input_tokens_seen),
        "pretrain_loss": round(result.metrics["train_loss"], 4),
        "pretrain_seconds": round(seconds, 1),
    }
