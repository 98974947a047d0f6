"""Merging an adapter (mathpipe.training.merge): logits against base + adapter, tolerance, bf16, probes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathpipe.errors import ConfigError, PipelineError
from tests.trainers import merge_config


def test_merged_checkpoint_matches_base_plus_adapter(tmp_path, tiny_model_dir, prepared, sft_run):
    from mathpipe.models import load_causal_lm, load_tokenizer
    from mathpipe.training.merge import merge_adapter

    cfg, _ = sft_run
    summary = merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "merged", merge_config(prepared))
    assert summary["method"] == "lora"
    assert summary["max_abs_logit_diff"] < 1e-4 and summary["probe_tokens"] > 0
    assert summary["tie_word_embeddings"] is True
    merged = load_causal_lm(tmp_path / "merged", dtype="float32")
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert load_tokenizer(tmp_path / "merged").padding_side == "left"
    assert (tmp_path / "merged" / "generation_config.json").is_file()
    assert json.loads((tmp_path / "merged" / "mathpipe.json").read_text())["adapter"] == cfg.out_dir


def test_merge_fails_and_writes_nothing_beyond_tolerance(tmp_path, tiny_model_dir, prepared, sft_run):
    from mathpipe.training.merge import merge_adapter

    cfg, _ = sft_run
    # float32 merging rounds by about 1e-6: a tolerance below that must stop the stage.
    with pytest.raises(PipelineError, match=r"merge\.tolerance"):
        merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "merged", merge_config(prepared, tolerance=1e-12))
    assert not (tmp_path / "merged").exists()


@pytest.fixture(scope="module")
def bf16_base_and_adapter(tmp_path_factory, pretrained_model_dir):
    """A bf16 base (as Qwen3 ships) and a LoRA adapter whose update is not zero."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model

    from mathpipe.models import load_causal_lm, load_tokenizer

    tmp = tmp_path_factory.mktemp("bf16")
    base = tmp / "base"
    shutil.copytree(pretrained_model_dir, base)
    load_causal_lm(base, dtype="bfloat16", device="cpu").save_pretrained(base)
    model = get_peft_model(load_causal_lm(base, dtype="float32", device="cpu"),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    model.save_pretrained(tmp / "adapter")
    load_tokenizer(base).save_pretrained(tmp / "adapter")
    return base, tmp / "adapter"


def test_a_bf16_base_merges_and_reports_the_cast_apart(tmp_path, bf16_base_and_adapter, prepared):
    """Saving in bf16 rounds the logits far beyond merge.tolerance: that is reported, not a failure."""
    from safetensors import safe_open

    from mathpipe.training.merge import merge_adapter

    base, adapter = bf16_base_and_adapter
    summary = merge_adapter(base, adapter, tmp_path / "merged", merge_config(prepared, tolerance=1e-3))
    assert summary["dtype"] == "bfloat16" and summary["max_abs_logit_diff"] < 1e-4
    assert summary["cast_abs_logit_diff"] > summary["tolerance"]  # what failed every bf16 merge before
    with safe_open(tmp_path / "merged" / "model.safetensors", "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}


def test_probe_figures_stay_out_of_the_merged_folder(tmp_path, tiny_model_dir, prepared, sft_run):
    """Another probe count or length re-runs merge but must leave the checkpoint (tokenizer.json
    included) byte-identical, so DVC does not re-run everything downstream of it."""
    from mathpipe.training.merge import merge_adapter

    cfg, _ = sft_run
    first = merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "a",
                          merge_config(prepared, probe_samples=2, probe_max_tokens=16))
    second = merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "b", merge_config(prepared, probe_samples=4))
    assert first["probe_tokens"] < second["probe_tokens"]
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_probes_are_cut_to_their_first_probe_max_tokens(tiny_model_dir, prepared):
    import torch

    from mathpipe.models import load_tokenizer
    from mathpipe.training.merge import probe_batch, probe_rows

    tokenizer = load_tokenizer(tiny_model_dir)
    whole = list(probe_rows(probe_batch(tokenizer, prepared / "sft_val.jsonl", 4)))
    cut = list(probe_rows(probe_batch(tokenizer, prepared / "sft_val.jsonl", 4, max_tokens=16)))
    assert min(row["input_ids"].shape[1] for row in whole) > 16
    for long, short in zip(whole, cut, strict=True):
        assert torch.equal(short["input_ids"], long["input_ids"][:, :16])  # the start kept, the rest cut


def test_a_bad_merge_parameter_is_one_error_naming_it(prepared):
    with pytest.raises(ConfigError, match=r"merge\.probe_max_tokens"):
        merge_config(prepared, probe_max_tokens=0)


def test_a_checkpoint_that_loses_weights_on_save_is_refused(tmp_path, tiny_model_dir, prepared, sft_run, monkeypatch):
    import torch
    from transformers import PreTrainedModel

    from mathpipe.training.merge import merge_adapter

    cfg, _ = sft_run
    save = PreTrainedModel.save_pretrained

    def save_without_a_norm(self, folder, **kwargs):  # what a broken save would write
        save(self, folder, **kwargs)
        from safetensors.torch import load_file, save_file

        path = Path(folder) / "model.safetensors"
        weights = load_file(path)
        weights["model.norm.weight"] = torch.zeros_like(weights["model.norm.weight"])
        save_file(weights, path, metadata={"format": "pt"})

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_without_a_norm)
    with pytest.raises(PipelineError, match=r"does not hold the merged weights of model\.norm\.weight"):
        merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "merged", merge_config(prepared))
    assert not (tmp_path / "merged").exists()
