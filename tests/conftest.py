"""Shared, session-scoped fixtures: a small sample data set and a tiny model built from it.

Both are built once per test session in a temporary folder (about a second together) and must be
treated as read-only: a test that needs to modify the data copies it first (`copy_sample`).
"""

from __future__ import annotations

import os

# Before anything imports huggingface_hub, which reads them once. Tests never reach the Hub and start
# no telemetry thread: one crashed the test process with a segmentation fault inside getaddrinfo on
# a machine with no network. Subprocesses (dvc repro, the stages) inherit both.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import shutil
from pathlib import Path

import pytest

from mathpipe.data.prepare import PrepareConfig
from mathpipe.data.sample_data import SampleConfig, write_sample_data
from mathpipe.training.base_model import BaseModelConfig, build_base_model
from mathpipe.training.pretrain import PretrainSettings
from mathpipe.training.tiny_model import TinyModelConfig
from tests.params import param_config

SMALL_SAMPLE = param_config(SampleConfig, "sample", n_train=200, n_gsm8k_test=20, n_cmath_test=20, n_math_test=20,
                            n_gsm8k_train=20, shards=2)
TINY = param_config(
    TinyModelConfig,
    "base_model.tiny",
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
              "pretrain": param_config(PretrainSettings, "base_model.pretrain", epochs=0)}
    return param_config(BaseModelConfig, "base_model", **{**fields, **overrides})


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
def pretrained_model_dir(tmp_path_factory, sample_dir) -> Path:
    """The tiny model pre-trained for 2 epochs on the sample's problems and solutions (a few seconds):
    like the default base model, it writes text that depends on the prompt, with confident logits."""
    out = tmp_path_factory.mktemp("models") / "pretrained"
    pretrain = param_config(PretrainSettings, "base_model.pretrain", epochs=2, batch_size=16)
    build_base_model(tiny_base_config(out, sample_dir, pretrain=pretrain))
    return out


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny base model with its weights re-drawn at a larger scale.

    At the default initialisation a random model just repeats the last prompt token ("\\n\\n\\n..."),
    so any two runs agree trivially; larger weights make the output depend on the whole prompt, which
    is what the parity tests need.
    """
    import torch

    from mathpipe.models import load_causal_lm

    out = tmp_path_factory.mktemp("gen") / "model"
    shutil.copytree(tiny_model_dir, out)
    model = load_causal_lm(out, device="cpu")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * (1.0 if "embed" in name else 0.3))
    model.save_pretrained(out)
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
        raw = {
            "source": "local",
            "raw_dir": str(raw_dir or sample_dir),
            "out_dir": str(out_dir),
            "tokenizer": str(tiny_model_dir),
            **overrides,
        }
        return param_config(PrepareConfig, "prepare", **raw)

    return make


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, prepare_config):
    """prepare's outputs (SFT records, pairs, eval sets) from the sample, for the training tests."""
    from mathpipe.data.prepare import resolve_inputs, run_prepare
    from mathpipe.models import load_tokenizer

    out = tmp_path_factory.mktemp("prepared") / "data"
    cfg = prepare_config(out)
    run_prepare(cfg, load_tokenizer(cfg.tokenizer), resolve_inputs(cfg))
    return out


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, tiny_model_dir, prepared):
    """A 4-step LoRA SFT run on the prepared sample (tests/trainers.py's configuration): (config, summary)."""
    from mathpipe.training.sft import run_sft
    from tests.trainers import sft_config

    tmp = tmp_path_factory.mktemp("sft")
    cfg = sft_config(tmp, tiny_model_dir, prepared)
    return cfg, run_sft(cfg)
