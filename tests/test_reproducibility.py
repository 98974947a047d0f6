"""What the pipeline promises to reproduce bit for bit on any machine (README, "Reproducibility"):
the generated data, the tokenizer and prepare's records hash to what this checkout's dvc.lock and
metrics/base_model.json record, whatever the processor.

The real stages run under DVC in a copy of the checkout, in seconds: the base model is built without
pre-training, since trained weights are bit-identical on one machine only (tests/test_e2e.py compares
their figures within tolerances) and prepare reads only the tokenizer. The full default run is
`make test-full`.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from mathpipe.config import load_section
from mathpipe.training.base_model import BaseModelConfig, build_base_model
from tests.checkout import ROOT, STAGES_REPRODUCED_EXACTLY, copy_checkout, outs_hashes, run


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return copy_checkout(tmp_path_factory.mktemp("reproducibility") / "repo")


def lock_of(folder) -> dict:
    return yaml.safe_load((folder / "dvc.lock").read_text(encoding="utf-8"))


def test_data_tokenizer_and_prepare_hash_as_committed(checkout, monkeypatch):
    committed = lock_of(ROOT)
    run(["dvc", "repro", "--single-item", "sample_data"], checkout)
    assert outs_hashes(lock_of(checkout), "sample_data") == outs_hashes(committed, "sample_data")

    monkeypatch.chdir(checkout)  # the params' paths are relative to the repository
    cfg = load_section("base_model", BaseModelConfig)
    untrained = dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, epochs=0))
    summary = build_base_model(untrained)
    reference = json.loads((ROOT / "metrics/base_model.json").read_text(encoding="utf-8"))
    assert summary["tokenizer_revision"] == reference["tokenizer_revision"]

    run(["dvc", "repro", "--single-item", "prepare"], checkout)  # on that tokenizer, untrained weights
    for stage in STAGES_REPRODUCED_EXACTLY:
        assert outs_hashes(lock_of(checkout), stage) == outs_hashes(committed, stage), stage
