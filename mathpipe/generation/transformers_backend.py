"""The transformers backend of the generation interface: `model.generate` in left-padded batches."""

from __future__ import annotations

import logging

import torch
from tqdm import tqdm

from mathpipe.generation.decoding import decode_completion, encode_prompts
from mathpipe.generation.settings import Completion, GenerationSettings
from mathpipe.models import default_device, load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


class TransformersGenerator:
    """`model.generate` in left-padded batches, longest prompts first."""

    name = "transformers"

    def __init__(self, model_path: str, dtype: str = "auto", device: str | None = None,
                 batch_size: int = 32, trust_remote_code: bool = False):
        log.info("generation backend: transformers (%s)", model_path)
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
        return encode_prompts(self.tokenizer, prompts, self.max_length)

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

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
        # top_k 0: sample from the whole (top-p) distribution, as vLLM does, not generation_config's top 50.
        if s.temperature > 0:
            sampling = {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k}
        else:
            sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
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
        return decode_completion(self.tokenizer, tokens, self.eos_ids, s.stop, self.special_tokens)
