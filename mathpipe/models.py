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


SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def require_model_dir(path: str | Path, key: str | None = None, weights: bool = True) -> Path:
    """`path` as a model folder written by save_pretrained, with its weights in safetensors (unless
    weights=False: a tokenizer or config is all that is read). `key` names the parameter that gave
    the path, in the error."""
    path = Path(path)
    named = f"{key}: " if key else ""
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise PipelineError(f"{named}model not found: {path} {what} (expected a folder written by save_pretrained)")
    if weights and not (any(path.glob("*.safetensors")) or (path / SAFETENSORS_INDEX).is_file()):
        pickled = [name for name in PICKLED_WEIGHTS if (path / name).is_file()]
        if pickled:
            raise PipelineError(
                f"{named}{path} holds only pickled weights ({pickled[0]}); the pipeline loads safetensors only, "
                "since unpickling can run code: convert it once with transformers "
                "(AutoModel*.from_pretrained(path).save_pretrained(path, safe_serialization=True)) "
                "or use the Hub's safetensors revision")
        raise PipelineError(f"{named}{path} has no weights (*.safetensors or {SAFETENSORS_INDEX})")
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

    folder = require_model_dir(path, weights=False)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
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
