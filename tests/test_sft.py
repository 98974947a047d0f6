"""SFT (mathpipe.training.sft) on the tiny fixture model: assistant-only loss, the adapter and its
figures, byte-identical re-runs, full fine-tuning.

Each run is a handful of optimiser steps on a few records, so what is checked is the plumbing a real
run depends on (masks, checkpoints, merged weights, metrics, errors), not how well a 2-step model does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathpipe.errors import ConfigError
from tests.trainers import TRAIN, sft_config


def test_a_template_without_generation_markers_is_refused(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.sft import run_sft

    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    cfg = sft_config(tmp_path, tiny_model_dir, prepared, chat_template=str(template))
    with pytest.raises(ConfigError, match=r"sft\.chat_template: .*generation"):
        run_sft(cfg)


def test_loss_covers_assistant_tokens_ending_with_eos(tiny_tokenizer, prepared):
    from mathpipe.io import read_jsonl

    record = read_jsonl(prepared / "sft_train.jsonl")[0]
    enc = tiny_tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    target = [t for t, m in zip(ids, mask) if m]
    assert tiny_tokenizer.decode(target) == record["messages"][-1]["content"] + tiny_tokenizer.eos_token
    assert target[-1] == tiny_tokenizer.eos_token_id
    question_ids = [t for t, m in zip(ids, mask) if not m]
    assert record["problem"].split()[0] in tiny_tokenizer.decode(question_ids)


def test_sft_writes_an_adapter_and_its_figures(sft_run):
    cfg, summary = sft_run
    out = Path(cfg.out_dir)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) >= {"q_proj", "down_proj"}
    assert summary["method"] == "lora" and summary["steps"] == 4
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert summary["tokens_per_second"] > 0 and summary["train_loss"] > 0 and summary["eval_loss"] > 0
    curves = Path(cfg.live_dir) / "plots" / "metrics"
    assert (curves / "loss.tsv").is_file() and (curves / "eval" / "loss.tsv").is_file()


def test_the_same_run_writes_the_same_files_and_no_pickle(tmp_path, tiny_model_dir, prepared, sft_run):
    """DVC caches the adapter by content: an identical re-run must hash the same (the Trainer's
    pickled arguments did not), and nothing in it may need pickle to load."""
    from mathpipe.training.sft import run_sft

    first = Path(sft_run[0].out_dir)
    cfg = sft_config(tmp_path, tiny_model_dir, prepared)
    run_sft(cfg)
    second = Path(cfg.out_dir)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    # PEFT writes this set in the order of the process's string hashes (random per process)
    modules = json.loads((first / "adapter_config.json").read_text())["target_modules"]
    assert modules == sorted(modules) and len(modules) == 7
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))], names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_full_fine_tuning_writes_a_whole_model(tmp_path, tiny_model_dir, prepared):
    from mathpipe.training.sft import run_sft

    cfg = sft_config(tmp_path, tiny_model_dir, prepared, lora=None,
                     train={**TRAIN, "max_steps": 2})
    summary = run_sft(cfg)
    assert summary["method"] == "full" and summary["trainable_parameters"] == summary["total_parameters"]
    assert (tmp_path / "adapter" / "model.safetensors").is_file()
