"""The one generation interface. Every stage that samples text calls `Generator.generate`.

    gen = make_generator("models/sft", EngineSettings(backend="auto"))   # vLLM if usable, else transformers
    outs = gen.generate(prompts, GenerationSettings(max_new_tokens=256, n=4, temperature=0.8, seed=0))
    outs[i][j].text   # j-th completion of prompt i, stop strings and EOS removed
    gen.close()       # frees the engine's memory (vLLM reserves most of the GPU)

Prompts are already rendered with the chat template (`mathpipe.prompts.render_prompt`) and are
tokenized here, without adding special tokens, so every backend sees the same token ids. Two
backends: `transformers` (`model.generate`, below) and `vllm` (`mathpipe.vllm_generator`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from tqdm import tqdm

from mathpipe.config import check, check_positive, check_range
from mathpipe.errors import PipelineError
from mathpipe.models import DTYPES, default_device, load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # sample from the k likeliest tokens only (0: all of them); Qwen3 thinking mode: 20
    n: int = 1  # completions per prompt
    seed: int = 0
    stop: list[str] = field(default_factory=lambda: ["<|im_end|>", "<|im_start|>"])

    def validate(self, prefix: str) -> None:
        check_positive(self.max_new_tokens, f"{prefix}.max_new_tokens")
        check(self.temperature >= 0, f"{prefix}.temperature", f"must be >= 0, got {self.temperature}")
        check_range(self.top_p, f"{prefix}.top_p", 1e-6, 1.0)
        check(self.top_k >= 0, f"{prefix}.top_k", f"must be >= 0 (0: no top-k cut), got {self.top_k}")
        check_positive(self.n, f"{prefix}.n")
        check(self.temperature > 0 or self.n == 1, f"{prefix}.n",
              "greedy decoding (temperature 0) gives one completion per prompt; set temperature > 0")


@dataclass
class EngineSettings:
    """How a model is served; the same section in every stage that generates."""

    backend: Literal["auto", "vllm", "transformers"] = "auto"  # auto: vLLM when installed and usable
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    batch_size: int = 64  # transformers: prompts per generate call (vLLM schedules its own batches)
    max_model_len: int | None = None  # vllm: null means the model's max_position_embeddings
    kv_cache_gib: float = 1.0  # vllm on CPU: KV cache space
    gpu_memory_utilization: float = 0.85  # vllm on CUDA: share of GPU memory for weights + KV cache
    tensor_parallel_size: int = 1  # vllm: GPUs one model is split across
    data_parallel_size: int = 1  # vllm: engines, each on tensor_parallel_size GPUs, sharing the prompts
    enforce_eager: bool | None = None  # vllm: null means eager on CPU, CUDA graphs on GPU
    trust_remote_code: bool = False

    def validate(self, prefix: str) -> None:
        check_positive(self.batch_size, f"{prefix}.batch_size")
        if self.max_model_len is not None:
            check_positive(self.max_model_len, f"{prefix}.max_model_len")
        check_positive(self.kv_cache_gib, f"{prefix}.kv_cache_gib")
        check(0 < self.gpu_memory_utilization <= 1, f"{prefix}.gpu_memory_utilization",
              f"must be in (0, 1], got {self.gpu_memory_utilization}")
        check_positive(self.tensor_parallel_size, f"{prefix}.tensor_parallel_size")
        check_positive(self.data_parallel_size, f"{prefix}.data_parallel_size")
        check(self.data_parallel_size == 1 or self.backend != "transformers", f"{prefix}.data_parallel_size",
              "applies to the vllm backend; the transformers backend runs one model")
        check(self.dtype == "auto" or self.dtype in DTYPES, f"{prefix}.dtype",
              f"must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: Literal["stop", "length"]


class Generator(Protocol):
    name: str
    tokenizer: object
    max_length: int | None

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def truncate_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; True if one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def encode_prompts(tokenizer, prompts: list[str], max_length: int | None) -> list[list[int]]:
    """Token ids of each prompt, with a clear error for an empty set, an empty or too long prompt."""
    if not prompts:
        raise PipelineError("no prompts to generate from (the prompt set is empty)")
    ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for i, row in enumerate(ids):
        if not row:
            raise PipelineError(f"prompt {i} is empty")
        if max_length and len(row) >= max_length:
            raise PipelineError(
                f"prompt {i} has {len(row)} tokens and the model's maximum length is {max_length}: "
                f"no room left to generate; shorten the prompt or filter long prompts out"
            )
    return ids


def decode_completion(tokenizer, tokens: list[int], eos_ids: set[int], stop: list[str],
                      special_tokens: list[str]) -> Completion:
    """New tokens -> Completion, the same way for every backend: cut at the first EOS, decode with the
    special tokens kept (so a stop string that is one, <|im_start|>, is found), cut at the first stop
    string, then drop the special tokens left before the cut."""
    end = next((k for k, t in enumerate(tokens) if t in eos_ids), None)
    if end is not None:
        tokens = tokens[:end]
    text, stopped = truncate_at_stop(tokenizer.decode(tokens, skip_special_tokens=False), stop)
    for special in special_tokens:
        text = text.replace(special, "")
    finished = end is not None or stopped
    return Completion(text=text, num_tokens=len(tokens), finish_reason="stop" if finished else "length")


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


def make_generator(model_path: str, engine: EngineSettings) -> Generator:
    """The backend `engine.backend` names; `auto` takes vLLM when it is usable here and logs why not."""
    backend = engine.backend
    if backend not in ("auto", "vllm", "transformers"):
        raise PipelineError(f"unknown generation backend '{backend}' (known: auto, vllm, transformers)")
    if backend in ("auto", "vllm"):
        from mathpipe import vllm_generator

        reason = vllm_generator.unavailable_reason(model_path)
        if reason is None:
            if engine.data_parallel_size > 1:
                return vllm_generator.DataParallelVLLM(model_path, engine)
            return vllm_generator.VLLMGenerator(model_path, engine)
        if backend == "vllm":
            raise PipelineError(f"generation backend 'vllm' cannot run here: {reason}")
        log.info("backend auto: using transformers because %s", reason)
        if engine.data_parallel_size > 1:
            log.warning("data_parallel_size %d ignored: the transformers backend runs one model",
                        engine.data_parallel_size)
    return TransformersGenerator(model_path, dtype=engine.dtype, batch_size=engine.batch_size,
                                 trust_remote_code=engine.trust_remote_code)
