"""The one generation interface. Every stage that samples text calls `Generator.generate`.

    gen = TransformersGenerator("models/sft")
    outs = gen.generate(prompts, GenerationSettings(max_new_tokens=256, n=4, temperature=0.8, seed=0))
    outs[i][j].text   # j-th completion of prompt i, stop strings and EOS removed

Prompts are already rendered with the chat template (`mathpipe.prompts.render_prompt`) and are
tokenized without adding special tokens, so every backend sees the same token ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from tqdm import tqdm

from mathpipe.config import check, check_positive, check_range
from mathpipe.errors import PipelineError
from mathpipe.models import default_device, load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    n: int = 1  # completions per prompt
    seed: int = 0
    stop: list[str] = field(default_factory=lambda: ["<|im_end|>", "<|im_start|>"])

    def validate(self, prefix: str) -> None:
        check_positive(self.max_new_tokens, f"{prefix}.max_new_tokens")
        check(self.temperature >= 0, f"{prefix}.temperature", f"must be >= 0, got {self.temperature}")
        check_range(self.top_p, f"{prefix}.top_p", 1e-6, 1.0)
        check_positive(self.n, f"{prefix}.n")
        check(self.temperature > 0 or self.n == 1, f"{prefix}.n",
              "greedy decoding (temperature 0) gives one completion per prompt; set temperature > 0")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    name: str
    tokenizer: object

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[list[Completion]]: ...


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; True if one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class TransformersGenerator:
    """`model.generate` in left-padded batches, longest prompts first."""

    name = "transformers"

    def __init__(self, model_path: str, dtype: str = "auto", device: str | None = None,
                 batch_size: int = 32, trust_remote_code: bool = False):
        self.device = device or default_device()
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
        self.model = load_causal_lm(model_path, dtype=dtype, device=self.device, trust_remote_code=trust_remote_code)
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)
        self.special_tokens = [t for t in self.tokenizer.all_special_tokens if t]

    def encode(self, prompts: list[str]) -> list[list[int]]:
        if not prompts:
            raise PipelineError("no prompts to generate from (the prompt set is empty)")
        ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        for i, row in enumerate(ids):
            if not row:
                raise PipelineError(f"prompt {i} is empty")
            if self.max_length and len(row) >= self.max_length:
                raise PipelineError(
                    f"prompt {i} has {len(row)} tokens, more than the model's maximum length "
                    f"{self.max_length}; shorten it or filter long prompts out"
                )
        return ids

    @torch.inference_mode()
    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[list[Completion]]:
        ids = self.encode(prompts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        results: list[list[Completion] | None] = [None] * len(ids)
        torch.manual_seed(settings.seed)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in tqdm(batches, desc=f"generate ({self.name})", unit="batch", leave=False):
            for index, completions in zip(batch, self._generate_batch([ids[i] for i in batch], settings)):
                results[index] = completions
        return results

    def _generate_batch(self, batch: list[list[int]], s: GenerationSettings) -> list[list[Completion]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(row) for row in batch)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch], device=self.device)
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=self.device)
        max_new = s.max_new_tokens
        if self.max_length:
            max_new = min(max_new, self.max_length - width)
        sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p} if s.temperature > 0 else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new,
            num_return_sequences=s.n,
            stop_strings=s.stop or None,
            tokenizer=self.tokenizer,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids),
            **sampling,
        )
        new_tokens = out[:, width:].tolist()
        grouped = [new_tokens[i * s.n : (i + 1) * s.n] for i in range(len(batch))]
        return [[self._completion(tokens, s) for tokens in group] for group in grouped]

    def _completion(self, tokens: list[int], s: GenerationSettings) -> Completion:
        end = next((k for k, t in enumerate(tokens) if t in self.eos_ids), None)
        if end is not None:
            tokens = tokens[:end]
        # Decode with special tokens kept so a stop string that is one (<|im_start|>) is found, then
        # drop the special tokens left before the cut.
        text, stopped = truncate_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=False), s.stop)
        for special in self.special_tokens:
            text = text.replace(special, "")
        finished = end is not None or stopped
        return Completion(text=text, num_tokens=len(tokens), finish_reason="stop" if finished else "length")


def make_generator(backend: str, model_path: str, **kwargs) -> Generator:
    if backend == "transformers":
        return TransformersGenerator(model_path, **kwargs)
    raise PipelineError(f"unknown generation backend '{backend}' (known: transformers)")
