"""What a generating stage asks for (GenerationSettings), how its model is served (EngineSettings),
and what comes back (Completion): plain dataclasses, importable without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from mathpipe.config import DTYPE_NAMES, check, check_positive, check_range


@dataclass(kw_only=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float  # 0 means greedy
    top_p: float
    top_k: int  # sample from the k likeliest tokens only (0: all of them); Qwen3 thinking mode: 20
    n: int  # completions per prompt
    seed: int
    stop: list[str]

    def validate(self, prefix: str) -> None:
        check_positive(self.max_new_tokens, f"{prefix}.max_new_tokens")
        check(self.temperature >= 0, f"{prefix}.temperature", f"must be >= 0, got {self.temperature}")
        check_range(self.top_p, f"{prefix}.top_p", 1e-6, 1.0)
        check(self.top_k >= 0, f"{prefix}.top_k", f"must be >= 0 (0: no top-k cut), got {self.top_k}")
        check_positive(self.n, f"{prefix}.n")
        check(self.temperature > 0 or self.n == 1, f"{prefix}.n",
              "greedy decoding (temperature 0) gives one completion per prompt; set temperature > 0")


@dataclass(kw_only=True)
class EngineSettings:
    """How a model is served; the same section in every stage that generates."""

    backend: Literal["auto", "vllm", "transformers"]  # auto: vLLM when installed and usable
    dtype: str  # auto: bfloat16 on CUDA, float32 on CPU
    batch_size: int  # transformers: prompts per generate call (vLLM schedules its own batches)
    max_model_len: int | None  # vllm: null means the model's max_position_embeddings
    kv_cache_gib: float  # vllm on CPU: KV cache space
    gpu_memory_utilization: float  # vllm on CUDA: share of GPU memory for weights + KV cache
    tensor_parallel_size: int  # vllm: GPUs one model is split across
    data_parallel_size: int  # vllm: engines, each on tensor_parallel_size GPUs, sharing the prompts
    enforce_eager: bool | None  # vllm: null means eager on CPU, CUDA graphs on GPU
    trust_remote_code: bool

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
        check(self.dtype == "auto" or self.dtype in DTYPE_NAMES, f"{prefix}.dtype",
              f"must be auto or one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")


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
