"""Loading models and tokenizers with clear errors and safe defaults.

Weights load from safetensors only, remote code stays off unless a parameter turns it on, and a
path that does not hold a model fails with a message naming it, before anything heavy starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mathpipe.config import DTYPE_NAMES
from mathpipe.errors import PipelineError
from mathpipe.io import read_json

log = logging.getLogger(__name__)

ORIGIN_FILE = "mathpipe.json"  # written next to each model by the stage that made it
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def require_model_dir(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise PipelineError(f"model not found: {path} {what} (expected a folder written by save_pretrained)")
    return path


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """'auto' means bfloat16 on CUDA and float32 on CPU (this CPU has no fast bf16)."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise PipelineError(f"unknown dtype '{name}' (known: auto, {', '.join(DTYPES)})")
    return DTYPES[name]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str | Path, trust_remote_code: bool = False, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(require_model_dir(path), trust_remote_code=trust_remote_code)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise PipelineError(f"{path}: the tokenizer has no chat template; prompts are built with it")
    return tokenizer


def load_causal_lm(
    path: str | Path,
    dtype: str = "auto",
    device: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    model = AutoModelForCausalLM.from_pretrained(
        require_model_dir(path),
        dtype=resolve_dtype(dtype, device),
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    return model.to(device).eval()


def read_origin(model_dir: str | Path) -> dict:
    """Where a model came from (model_id, revision), as recorded by the stage that wrote it."""
    path = Path(model_dir) / ORIGIN_FILE
    return read_json(path) if path.is_file() else {"model_id": str(model_dir), "revision": None}
