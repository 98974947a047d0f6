"""The training stages on the tiny fixture model: SFT (LoRA and full), resume, merge, reward model, DPO.

Each run is a handful of optimiser steps on a few records, so the whole module takes seconds; what is
checked is the plumbing a real run depends on (masks, checkpoints, merged weights, metrics, errors),
not how well a 2-step model does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathpipe.config import from_dict
from mathpipe.errors import ConfigError, DataError, PipelineError
from mathpipe.io import write_jsonl

# TRL's own argument names (SFTConfig, RewardConfig, DPOConfig), as params.yaml writes them
TRAIN = {"num_train_epochs": 1, "max_steps": 4, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
         "learning_rate": 1e-3, "logging_steps": 1, "eval_steps": 2, "save_steps": 2, "max_length": 256, "seed": 0,
         "gradient_checkpointing": False}
PAIR_TRAIN = {**TRAIN, "max_length": 512}  # prepare keeps pairs within 512 tokens
LORA = {"r": 4, "alpha": 8}


def sft_config(tmp: Path, model: Path, prepared: Path, **overrides):
    from mathpipe.sft import SFTStageConfig

    raw = {
        "model": str(model),
        "train_file": str(prepared / "sft_train.jsonl"),
        "val_file": str(prepared / "sft_val.jsonl"),
        "max_train_samples": 24,
        "max_val_samples": 4,
        "out_dir": str(tmp / "adapter"),
        "checkpoint_dir": str(tmp / "checkpoints"),
        "live_dir": str(tmp / "dvclive"),
        "lora": LORA,
        "train": TRAIN,
        **overrides,
    }
    return from_dict(SFTStageConfig, raw, "sft")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_dir, prepared):
    from mathpipe.sft import run_sft

    tmp = tmp_path_factory.mktemp("sft")
    cfg = sft_config(tmp, tiny_model_dir, prepared)
    return cfg, run_sft(cfg)


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"lora": {**LORA, "r": 0}}, r"sft\.lora\.r"),
        ({"lora": {**LORA, "dropout": 1.5}}, r"sft\.lora\.dropout"),
        ({"dtype": "int8"}, r"sft\.dtype"),
        ({"train": {**TRAIN, "learning_rate": -1e-4}}, r"sft\.train\.learning_rate"),
        ({"train": {**TRAIN, "per_device_train_batch_size": 0}}, r"sft\.train\.per_device_train_batch_size: must be"),
        ({"train": {**TRAIN, "lr_scheduler_type": "zigzag"}}, r"sft\.train\.lr_scheduler_type: unknown scheduler"),
        ({"train": {**TRAIN, "max_steps": 0}}, r"sft\.train\.max_steps"),
        # a name TRL does not know, with the one it probably meant
        ({"train": {**TRAIN, "batch_size": 4}},
         r"sft\.train\.batch_size: not an argument of TRL's SFTConfig \(did you mean .*per_device_train_batch_size"),
        # what the pipeline sets itself is refused, not silently overridden
        ({"train": {**TRAIN, "bf16": True}}, r"sft\.train\.bf16: set by the pipeline"),
        ({"train": {**TRAIN, "assistant_only_loss": False}}, r"sft\.train\.assistant_only_loss: set by the pipeline"),
    ],
)
def test_bad_training_parameters_name_their_key(tmp_path, tiny_model_dir, prepared, override, message):
    with pytest.raises(ConfigError, match=message):
        sft_config(tmp_path, tiny_model_dir, prepared, **override)


def test_any_argument_of_trls_config_works_verbatim(tmp_path, tiny_model_dir, prepared):
    """A key params.yaml does not list reaches TRL as written; what it leaves out is TRL's default."""
    cfg = sft_config(tmp_path, tiny_model_dir, prepared,
                     train={**TRAIN, "adam_beta2": 0.95, "neftune_noise_alpha": 5.0, "completion_only_loss": None})
    args = cfg.arguments("sft")
    assert (args.adam_beta2, args.neftune_noise_alpha, args.max_length) == (0.95, 5.0, 256)
    assert args.assistant_only_loss and args.output_dir == cfg.checkpoint_dir and args.report_to == []
    assert args.warmup_steps == 0  # TRL's default, not one of the pipeline's


@pytest.mark.parametrize(
    ("targets", "message"),
    [(["q_proj", "qkv_proj"], r"sft\.lora\.target_modules\[1\]: the model has no linear module named 'qkv_proj'"),
     (["lm_head"], r"sft\.lora\.target_modules\[0\]: 'lm_head' is an embedding or output head"),
     (["embed_tokens"], r"sft\.lora\.target_modules\[0\]: 'embed_tokens'")],
)
def test_lora_targets_are_checked_against_the_model(tmp_path, tiny_model_dir, prepared, targets, message):
    from mathpipe.sft import run_sft

    cfg = sft_config(tmp_path, tiny_model_dir, prepared, lora={**LORA, "target_modules": targets})
    with pytest.raises(ConfigError, match=message):
        run_sft(cfg)
    assert not (tmp_path / "adapter").exists()


@pytest.mark.parametrize(("override", "key"), [
    ({"beta": 0}, r"dpo\.train\.beta"), ({"beta": -0.1}, r"dpo\.train\.beta"),
    ({"loss_type": ["sigmoid", "nope"]}, r"dpo\.train\.loss_type\[1\]: unknown DPO loss 'nope'"),
    ({"loss_weights": [1.0, 2.0]}, r"dpo\.train\.loss_weights: needs one weight per loss_type entry \(1\)"),
    ({"train_sampling_strategy": "group_by_length"}, r"dpo\.train\.train_sampling_strategy: cannot be group_by_length"),
])
def test_bad_dpo_parameters_name_their_key(override, key):
    from mathpipe.dpo import DPOStageConfig

    with pytest.raises(ConfigError, match=key):
        from_dict(DPOStageConfig, {"train": override}, "dpo")


def test_a_template_without_generation_markers_is_refused(tmp_path, tiny_model_dir, prepared):
    from mathpipe.sft import run_sft

    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    cfg = sft_config(tmp_path, tiny_model_dir, prepared, chat_template=str(template))
    with pytest.raises(ConfigError, match=r"sft\.chat_template: .*generation"):
        run_sft(cfg)


# --- SFT ------------------------------------------------------------------------------------------


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
    from mathpipe.sft import run_sft

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
    from mathpipe.sft import run_sft

    cfg = sft_config(tmp_path, tiny_model_dir, prepared, lora={"enabled": False},
                     train={**TRAIN, "max_steps": 2})
    summary = run_sft(cfg)
    assert summary["method"] == "full" and summary["trainable_parameters"] == summary["total_parameters"]
    assert (tmp_path / "adapter" / "model.safetensors").is_file()


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, prepared, sft_run):
    from transformers import TrainerCallback

    from mathpipe.sft import run_sft

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # checkpoint-2 is on disk; step 3 is lost
                raise KeyboardInterrupt

    cfg = sft_config(tmp_path, tiny_model_dir, prepared)
    with pytest.raises(KeyboardInterrupt):
        run_sft(cfg, callbacks=[Interrupt()])
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    assert not (tmp_path / "adapter").exists()

    summary = run_sft(cfg)
    assert summary["resumed_from"] == "checkpoint-2"
    assert summary["steps"] == 4
    # Throughput counts only the tokens of the steps this run trained (3 and 4), not 1 and 2 again.
    assert 0 < summary["train_tokens"] < sft_run[1]["train_tokens"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    # A finished run leaves no checkpoint: a later re-run trains again instead of "resuming" at the end.
    assert not list((tmp_path / "checkpoints").glob("checkpoint-*"))


def test_checkpoints_of_another_configuration_are_not_resumed(tmp_path):
    from mathpipe.training import prepare_checkpoints

    folder = tmp_path / "ckpt"
    assert prepare_checkpoints(folder, "aaaa") is None
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "trainer_state.json").write_text("{}")
    assert prepare_checkpoints(folder, "aaaa").endswith("checkpoint-5")
    assert prepare_checkpoints(folder, "bbbb") is None  # another learning rate, other data...
    assert not (folder / "checkpoint-5").exists()


# --- merge ----------------------------------------------------------------------------------------


def merge_config(prepared: Path, **overrides):
    from mathpipe.merge import MergeConfig

    raw = {"models": {"x": {"base": "b", "adapter": "a", "out": "o"}},
           "probe_file": str(prepared / "sft_val.jsonl"), "probe_samples": 4, **overrides}
    return from_dict(MergeConfig, raw, "merge")


def test_merged_checkpoint_matches_base_plus_adapter(tmp_path, tiny_model_dir, prepared, sft_run):
    from mathpipe.merge import merge_adapter
    from mathpipe.models import load_causal_lm, load_tokenizer

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
    from mathpipe.merge import merge_adapter

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

    from mathpipe.merge import merge_adapter

    base, adapter = bf16_base_and_adapter
    summary = merge_adapter(base, adapter, tmp_path / "merged", merge_config(prepared, tolerance=1e-3))
    assert summary["dtype"] == "bfloat16" and summary["max_abs_logit_diff"] < 1e-4
    assert summary["cast_abs_logit_diff"] > summary["tolerance"]  # what failed every bf16 merge before
    with safe_open(tmp_path / "merged" / "model.safetensors", "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"BF16"}


def test_probe_figures_stay_out_of_the_merged_folder(tmp_path, tiny_model_dir, prepared, sft_run):
    """Another probe count or length re-runs merge but must leave the checkpoint (tokenizer.json
    included) byte-identical, so DVC does not re-run everything downstream of it."""
    from mathpipe.merge import merge_adapter

    cfg, _ = sft_run
    first = merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "a",
                          merge_config(prepared, probe_samples=2, probe_max_tokens=16))
    second = merge_adapter(tiny_model_dir, cfg.out_dir, tmp_path / "b", merge_config(prepared, probe_samples=4))
    assert first["probe_tokens"] < second["probe_tokens"]
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_probes_are_cut_to_their_first_probe_max_tokens(tiny_model_dir, prepared):
    import torch

    from mathpipe.merge import probe_batch, probe_rows
    from mathpipe.models import load_tokenizer

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

    from mathpipe.merge import merge_adapter

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


# --- reward model ---------------------------------------------------------------------------------


def test_reward_model_trains_merges_and_scores_text(tmp_path, tiny_model_dir, prepared):
    from mathpipe.reward import RewardScorer, RewardStageConfig, run_reward_model

    cfg = from_dict(RewardStageConfig, {
        "model": str(tiny_model_dir), "train_file": str(prepared / "pairs_train.jsonl"),
        "val_file": str(prepared / "pairs_val.jsonl"), "max_train_samples": 16, "max_val_samples": 3,
        "out_dir": str(tmp_path / "reward"), "checkpoint_dir": str(tmp_path / "ckpt"),
        "live_dir": str(tmp_path / "live"), "lora": LORA, "train": PAIR_TRAIN,
    }, "reward_model")
    summary = run_reward_model(cfg)
    held = summary["held_out"]
    assert held["pairs"] == 3 and 0.0 <= held["accuracy"] <= 1.0
    assert held["mean_margin"] == pytest.approx(held["mean_chosen"] - held["mean_rejected"], abs=1e-5)
    assert 0.0 <= held["likelihood_baseline_accuracy"] <= 1.0
    assert not (tmp_path / "reward" / "adapter_config.json").exists()  # merged: standalone
    scorer = RewardScorer(tmp_path / "reward")
    scores = scorer.score(["What is 2 + 3?", "What is 2 + 3?"], ["The answer is \\boxed{5}.", "It is 6."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    assert scores == scorer.score(["What is 2 + 3?"] * 2, ["The answer is \\boxed{5}.", "It is 6."])


def test_likelihood_baseline_is_the_models_own_loss_on_the_answer_tokens(tiny_model_dir):
    import torch

    from mathpipe import prompts
    from mathpipe.models import load_causal_lm, load_tokenizer
    from mathpipe.reward import mean_response_logprobs

    questions = ["What is 2 + 3?", "Tom has 4 apples and buys 7 more. How many apples does he have?"]
    answers = ["<think>\n2 + 3 = 5\n</think>\n\nThe answer is \\boxed{5}.", "It is \\boxed{11}."]
    batched = mean_response_logprobs(tiny_model_dir, questions, answers, batch_size=2)
    one_by_one = [mean_response_logprobs(tiny_model_dir, [q], [a], batch_size=1)[0]
                  for q, a in zip(questions, answers)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)  # right padding changes nothing

    # The oracle: transformers' own loss with the prompt masked is minus the mean answer log-probability.
    tokenizer, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, device="cpu")
    for question, answer, mean in zip(questions, answers, batched):
        turns = prompts.messages(question)
        head = tokenizer(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
        full = tokenizer(tokenizer.apply_chat_template(turns + [{"role": "assistant", "content": answer}],
                                                       tokenize=False), add_special_tokens=False)["input_ids"]
        assert full[:len(head)] == head
        labels = [-100] * len(head) + full[len(head):]
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([full]), labels=torch.tensor([labels])).loss.item()
        assert mean == pytest.approx(-loss, abs=1e-5)


# --- preference pairs and DPO ---------------------------------------------------------------------


def test_pair_file_with_missing_columns_names_them(tmp_path):
    from mathpipe.data.pairs import read_pairs

    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"instruction": "1 + 1?", "chosen_response": "2"}])
    with pytest.raises(DataError, match="rejected_response"):
        read_pairs([path], "distilabel")
    write_jsonl(path, [{"prompt": [{"role": "user", "content": "q"}], "chosen": "a"}])
    with pytest.raises(DataError, match="rejected"):
        read_pairs([path], "trl")


def test_external_pair_schemas_become_chat_pairs(tmp_path):
    from mathpipe import prompts
    from mathpipe.data.pairs import read_pairs

    distilabel = tmp_path / "distilabel.jsonl"
    write_jsonl(distilabel, [{"instruction": "What is 6 * 7?", "chosen_response": "42", "rejected_response": "43",
                              "chosen_rating": 10, "rejected_rating": 2}])
    step = tmp_path / "step.jsonl"
    write_jsonl(step, [{"prompt": "What is 6 * 7?", "initial_reason_steps": "Step 1: ", "chosen": "6*7=42",
                        "rejected": "6*7=43", "full_chosen": "Step 1: 6*7=42", "full_rejected": "Step 1: 6*7=43",
                        "answer": "42", "dataset": "gsm8k"}])
    for path, fmt, chosen in ((distilabel, "distilabel", "42"), (step, "math_step_dpo", "Step 1: 6*7=42")):
        (pair,) = read_pairs([path], fmt)
        assert pair["prompt"] == prompts.messages("What is 6 * 7?")
        # in the form of the SFT records: the solution as the reasoning, its answer boxed
        assert pair["chosen"] == [{"role": "assistant", "content": prompts.response(chosen, "42")}]
        assert pair["rejected"][0]["role"] == "assistant" and "\\boxed{43}" in pair["rejected"][0]["content"]
        (plain,) = read_pairs([path], fmt, thinking=False)  # non-thinking: the solution as it is
        assert plain["chosen"] == [{"role": "assistant", "content": chosen}]


def test_dpo_trains_an_adapter_on_the_policy(tmp_path, tiny_model_dir, prepared):
    from mathpipe.dpo import DPOStageConfig, run_dpo

    cfg = from_dict(DPOStageConfig, {
        "model": str(tiny_model_dir),
        "pairs": {"train_files": str(prepared / "pairs_train.jsonl"), "val_files": str(prepared / "pairs_val.jsonl")},
        "max_train_samples": 16, "max_val_samples": 3, "out_dir": str(tmp_path / "dpo"),
        "checkpoint_dir": str(tmp_path / "ckpt"), "live_dir": str(tmp_path / "live"),
        "lora": LORA, "train": {**PAIR_TRAIN, "beta": 0.2, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]},
    }, "dpo")
    summary = run_dpo(cfg)
    assert (tmp_path / "dpo" / "adapter_config.json").is_file()
    assert summary["train_pairs"] == 16 and summary["val_pairs"] == 3 and summary["steps"] == 4
    assert 0.0 <= summary["held_out"]["reward_accuracy"] <= 1.0
    assert summary["held_out"]["reward_margin"] is not None


@pytest.mark.parametrize("stage", ["dpo", "reward_model"])
def test_a_max_length_that_would_cut_answers_stops_before_training(tmp_path, tiny_model_dir, prepared, stage):
    """Truncation would cut the answer's end and EOS, the tokens that tell chosen from rejected."""
    from mathpipe.dpo import DPOStageConfig, run_dpo
    from mathpipe.reward import RewardStageConfig, run_reward_model

    common = {"model": str(tiny_model_dir), "max_train_samples": 8, "max_val_samples": 2,
              "out_dir": str(tmp_path / "out"), "checkpoint_dir": str(tmp_path / "ckpt"),
              "live_dir": str(tmp_path / "live"), "lora": LORA, "train": {**PAIR_TRAIN, "max_length": 32}}
    files = {"train_file": str(prepared / "pairs_train.jsonl"), "val_file": str(prepared / "pairs_val.jsonl")}
    if stage == "dpo":
        cfg, run = from_dict(DPOStageConfig, {**common, "pairs": {"train_files": files["train_file"],
                                                                   "val_files": files["val_file"]}}, stage), run_dpo
    else:
        cfg, run = from_dict(RewardStageConfig, {**common, **files}, stage), run_reward_model
    with pytest.raises(ConfigError, match=rf"^{stage}\.train\.max_length: 32 tokens would cut \d+ of 20 sequences"
                                          r".*rejection_sampling\.generation\.max_new_tokens"):
        run(cfg)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def test_dpo_holds_out_a_share_when_there_is_no_validation_file(tmp_path, prepared):
    from mathpipe.dpo import PairSource, load_pair_splits

    src = from_dict(PairSource, {"train_files": str(prepared / "pairs_train.jsonl"), "val_files": None,
                                 "val_fraction": 0.2}, "dpo.pairs")
    train, val = load_pair_splits(src, "dpo.pairs", None, None)
    assert val and train
    prompts_of = lambda rows: {json.dumps(r["prompt"]) for r in rows}  # noqa: E731
    assert not prompts_of(train) & prompts_of(val)


def test_missing_pair_files_are_named(tmp_path):
    from mathpipe.dpo import PairSource, load_pair_splits

    src = from_dict(PairSource, {"train_files": str(tmp_path / "none*.jsonl")}, "dpo.pairs")
    with pytest.raises(DataError, match=r"dpo\.pairs\.train_files"):
        load_pair_splits(src, "dpo.pairs", None, None)


def test_dvclive_in_an_empty_git_repository_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    from mathpipe.training import dvclive_callback

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="commit once"):
        dvclive_callback(tmp_path / "live", resume=False)
