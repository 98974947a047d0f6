"""base_model: the model every later stage starts from.

    python -m stages.base_model

`tiny` (default) trains a byte-level BPE tokenizer on the sample corpus, builds a small Qwen3 from a
fixed seed and pre-trains it briefly on the corpus as plain text (mathpipe/training/pretrain.py); `hub`
downloads a model at a pinned revision; `local` copies a folder written by `save_pretrained`. Each
writes `out_dir` plus `mathpipe.json`, which records where the model came from; evaluation metrics
quote it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mathpipe import prompts
from mathpipe.config import check
from mathpipe.data import readers
from mathpipe.hub import check_revision, download
from mathpipe.io import atomic_dir, write_json
from mathpipe.models import ORIGIN_FILE, require_model_dir
from mathpipe.training.pretrain import PretrainSettings, pretrain
from mathpipe.training.tiny_model import TinyModelConfig, build_model, train_tokenizer

log = logging.getLogger(__name__)

HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


@dataclass
class HubModel:
    model_id: str
    revision: str

    def validate(self, prefix: str) -> None:
        check_revision(self.revision, f"{prefix}.revision", "model")


@dataclass(kw_only=True)
class BaseModelConfig:
    source: Literal["tiny", "hub", "local"]
    out_dir: str
    metrics: str  # the stage's figures, a JSON file kept in git
    seed: int
    tiny: TinyModelConfig
    pretrain: PretrainSettings  # tiny only
    corpus_dir: str  # what the tiny tokenizer is trained on
    hub: HubModel | None
    local_path: str | None
    chat_template: str | None  # a jinja file (or trl:<file>) for a model that has none, a base model
    trust_remote_code: bool

    def validate(self, prefix: str) -> None:
        check(self.source != "hub" or self.hub is not None, f"{prefix}.hub",
              "is required when source is 'hub' (model_id and revision)")
        check(self.source != "local" or bool(self.local_path), f"{prefix}.local_path",
              "is required when source is 'local'")
        if self.chat_template is not None:
            prompts.chat_template_file(self.chat_template, f"{prefix}.chat_template")


def corpus_texts(corpus_dir: Path) -> Iterator[str]:
    """Training texts of the sample corpus (never its test sets) and the prompt instructions."""
    yield from prompts.INSTRUCTIONS.values()
    yield prompts.response("", "")
    columns = ("problem", "solution", "generations")
    for row in readers.iter_openr1(readers.expand_paths("openr1/*.parquet", corpus_dir), columns):
        yield row["problem"]
        yield row["solution"]
        yield from row["generations"]
    for row in readers.iter_gsm8k(readers.expand_paths("gsm8k/train.jsonl", corpus_dir)):
        yield row["question"]
        yield row["answer"]


def pretraining_texts(corpus_dir: Path) -> list[str]:
    """Training problems with their reference solutions, as plain text (no chat format)."""
    paths = readers.expand_paths("openr1/*.parquet", corpus_dir)
    return [f"{row['problem']}\n{row['solution']}" for row in readers.iter_openr1(paths, ("problem", "solution"))
            if row["problem"] and row["solution"]]


# The files that make a tokenizer (transformers writes those it needs); prepare depends on them only.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")


def fingerprint(folder: Path, names: tuple[str, ...] | None = None) -> str:
    """Content hash of a model's weights (or of the named files), standing in for a revision when
    there is none."""
    digest = hashlib.sha256()
    paths = sorted(folder.glob("*.safetensors")) if names is None else [folder / n for n in names]
    for path in filter(Path.is_file, paths):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def build_base_model(cfg: BaseModelConfig) -> dict:
    """Write the base model to cfg.out_dir; return its summary (also saved as mathpipe.json)."""
    if cfg.source == "local":
        require_model_dir(cfg.local_path, "base_model.local_path")  # fail before anything is written
    with atomic_dir(cfg.out_dir) as out:
        if cfg.source == "tiny":
            tokenizer = train_tokenizer(
                corpus_texts(Path(cfg.corpus_dir)), cfg.tiny.vocab_size, cfg.tiny.max_position_embeddings
            )
            # Saved as trained, before pre-training: encoding with truncation sets state in the
            # tokenizer that tokenizer.json would keep, and the tokenizer would then depend on it.
            tokenizer.save_pretrained(out)
            model = build_model(tokenizer, cfg.tiny, cfg.seed)
            trained = {}
            if cfg.pretrain.epochs > 0:
                trained = pretrain(model, tokenizer, pretraining_texts(Path(cfg.corpus_dir)), cfg.pretrain, cfg.seed)
            model.save_pretrained(out)
            origin = {"model_id": "tiny-qwen3", "revision": fingerprint(out), **trained}
        elif cfg.source == "hub":
            _download(cfg.hub, out)
            origin = {"model_id": cfg.hub.model_id, "revision": cfg.hub.revision}
        else:
            shutil.copytree(cfg.local_path, out, dirs_exist_ok=True)
            origin = {"model_id": str(cfg.local_path), "revision": fingerprint(out)}
        if cfg.chat_template is not None:  # what transformers reads beside tokenizer_config.json
            template = prompts.chat_template_file(cfg.chat_template, "base_model.chat_template")
            shutil.copyfile(template, out / "chat_template.jinja")
        # Training is bit-identical on one machine only; the tokenizer on every machine (README).
        origin["tokenizer_revision"] = fingerprint(out, TOKENIZER_FILES)
        summary = {"source": cfg.source, **origin, **describe(out, cfg.trust_remote_code)}
        # The folder's record leaves out wall-clock time, so the same build hashes the same for DVC.
        write_json(out / ORIGIN_FILE, {k: v for k, v in summary.items() if not k.endswith("_seconds")})
    return summary


def _download(spec: HubModel, out: Path) -> None:
    # Through the shared Hub cache, then copied: snapshot_download with local_dir never looks in the
    # cache, so an offline run (HF_HUB_OFFLINE=1) with the model already cached would fail.
    snapshot = download(spec.model_id, spec.revision, "base_model.hub", allow_patterns=HUB_PATTERNS)
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():  # the cache's links resolved: models/base holds the files themselves
            target = out / path.relative_to(snapshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def describe(folder: Path, trust_remote_code: bool = False) -> dict:
    """Check the folder loads as a causal LM with a tokenizer, and summarise it (without weights)."""
    from transformers import AutoConfig

    from mathpipe.models import load_tokenizer

    config = AutoConfig.from_pretrained(require_model_dir(folder), trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(folder, trust_remote_code=trust_remote_code)
    text = getattr(config, "text_config", config)
    return {
        "architecture": (config.architectures or ["?"])[0],
        "layers": text.num_hidden_layers,
        "hidden_size": text.hidden_size,
        "vocab_size": len(tokenizer),
        "parameters": count_saved_parameters(folder),
        "tie_word_embeddings": bool(getattr(text, "tie_word_embeddings", False)),
    }


def count_saved_parameters(folder: Path) -> int:
    """Parameters stored in a model folder's safetensors files (a tied embedding counts once)."""
    from safetensors import safe_open

    total = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            for name in f.keys():
                total += math.prod(f.get_slice(name).get_shape())
    return total
