"""Hub sources, checked offline: revisions must be pinned, and a failed download is one clear error
naming the repository and revision (HF_HUB_OFFLINE makes every download fail fast here)."""

from __future__ import annotations

import pytest

from mathpipe.data.prepare import PrepareConfig, resolve_inputs
from mathpipe.errors import ConfigError, DataError, PipelineError
from mathpipe.training.base_model import BaseModelConfig, build_base_model
from tests.params import param_config

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("revision", ["main", "v1.0", "0123abc"])
def test_prepare_hub_revision_must_be_a_commit(revision):
    raw = {"source": "hub", "hub": {"openr1": {"repo": "open-r1/OpenR1-Math-220k", "revision": revision,
                                               "files": "data/*.parquet"}}}
    with pytest.raises(ConfigError, match=r"prepare\.hub\.openr1\.revision: must be a 40-character commit"):
        param_config(PrepareConfig, "prepare", **raw)


def test_prepare_hub_download_failure_names_repo_and_revision(tmp_path):
    raw = {"source": "hub", "out_dir": str(tmp_path / "out"),
           "hub": {"openr1": {"repo": "open-r1/OpenR1-Math-220k", "revision": COMMIT, "files": "data/*.parquet"}}}
    cfg = param_config(PrepareConfig, "prepare", **raw)
    with pytest.raises(DataError, match=rf"prepare\.hub\.openr1: could not download open-r1/OpenR1-Math-220k@{COMMIT}"):
        resolve_inputs(cfg)
    assert not (tmp_path / "out").exists()


def test_hub_sources_needed_by_sft_sources_must_be_given():
    cfg = param_config(PrepareConfig, "prepare", **{"source": "hub"})
    with pytest.raises(DataError, match=r"prepare\.files\.openr1 \(or prepare\.hub\.openr1\) is needed"):
        resolve_inputs(cfg)


def test_base_model_hub_needs_a_pinned_model():
    with pytest.raises(ConfigError, match=r"base_model\.hub: is required"):
        param_config(BaseModelConfig, "base_model", **{"source": "hub"})
    with pytest.raises(ConfigError, match=r"base_model\.hub\.revision"):
        param_config(BaseModelConfig, "base_model", **{"source": "hub", "hub": {"model_id": "Qwen/Qwen3-0.6B", "revision": "main"}})


def test_base_model_hub_download_failure_leaves_nothing(tmp_path):
    out = tmp_path / "models" / "base"
    cfg = param_config(BaseModelConfig, "base_model", **{"source": "hub", "out_dir": str(out),
                                      "hub": {"model_id": "Qwen/Qwen3-0.6B", "revision": COMMIT}})
    with pytest.raises(PipelineError, match=rf"could not download Qwen/Qwen3-0.6B@{COMMIT}"):
        build_base_model(cfg)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary folder left behind either


def test_only_the_hub_clients_own_errors_are_bad_input(monkeypatch):
    """A malformed repository id is the user's; an exception the Hub client does not define is a
    bug and must keep its traceback instead of turning into a one-line error."""
    import huggingface_hub

    from mathpipe.hub import download

    with pytest.raises(DataError, match=rf"base_model\.hub: could not download not a repo//x@{COMMIT}"):
        download("not a repo//x", COMMIT, "base_model.hub")

    def broken(**kwargs):
        raise TypeError("a bug in our call")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", broken)
    with pytest.raises(TypeError, match="a bug in our call"):
        download("Qwen/Qwen3-0.6B", COMMIT, "base_model.hub")
