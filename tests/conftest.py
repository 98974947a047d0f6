"""Shared, session-scoped fixtures: a small sample data set and a tiny model built from it.

Both are built once per test session in a temporary folder (about a second together) and must be
treated as read-only: a test that needs to modify the data copies it first (`copy_sample`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mathpipe.base_model import BaseModelConfig, build_base_model
from mathpipe.data.prepare import PrepareConfig
from mathpipe.data.sample import SampleConfig, write_sample_data
from mathpipe.pretrain import PretrainSettings
from mathpipe.tiny_model import TinyModelConfig

SMALL_SAMPLE = SampleConfig(n_train=200, n_gsm8k_test=20, n_cmath_test=20, n_gsm8k_train=20, shards=2)
TINY = TinyModelConfig(
    vocab_size=400,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=1,
    num_key_value_heads=1,
    head_dim=64,
)
MODEL_SEED = 0


def tiny_base_config(out_dir: Path, corpus_dir: Path, **overrides) -> BaseModelConfig:
    # No pre-training: tests check plumbing, and a random model builds in a second.
    fields = {"out_dir": str(out_dir), "corpus_dir": str(corpus_dir), "tiny": TINY, "seed": MODEL_SEED,
              "pretrain": PretrainSettings(epochs=0)}
    return BaseModelConfig(**{**fields, **overrides})


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The raw sample data (OpenR1 shards, GSM8K train/test, CMATH test) in the real schemas."""
    out = tmp_path_factory.mktemp("sample") / "raw"
    write_sample_data(out, SMALL_SAMPLE)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, sample_dir) -> Path:
    """A tiny random Qwen3 + BPE tokenizer trained on the sample corpus, as the base_model stage writes it."""
    out = tmp_path_factory.mktemp("models") / "base"
    build_base_model(tiny_base_config(out, sample_dir))
    return out


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from mathpipe.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def copy_sample(sample_dir, tmp_path):
    """A writable copy of the sample data under tmp_path (to break on purpose)."""

    def copy(name: str = "raw") -> Path:
        dest = tmp_path / name
        shutil.copytree(sample_dir, dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def prepare_config(sample_dir, tiny_model_dir):
    """PrepareConfig reading `raw_dir` (default: the sample) with the tiny tokenizer, writing to out_dir."""

    def make(out_dir: Path, raw_dir: Path | None = None, **overrides) -> PrepareConfig:
        from mathpipe.config import from_dict

        raw = {
            "source": "local",
            "raw_dir": str(raw_dir or sample_dir),
            "out_dir": str(out_dir),
            "tokenizer": str(tiny_model_dir),
            **overrides,
        }
        return from_dict(PrepareConfig, raw, "prepare")

    return make
