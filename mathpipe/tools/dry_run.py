"""Check a profile offline, before anything is downloaded: params, the model's shape, data schemas.

    python -m mathpipe.tools.dry_run qwen3-0.6b        # make dry-run PROFILE=qwen3-0.6b

1. params.yaml with the profile applied: every key exists, every section validates (types,
   ranges, pinned 40-character revisions, accelerate config files, chat templates).
2. The model: its config.json (from the local Hugging Face cache if there, else the copy the
   profile records) builds the architecture on PyTorch's meta device (no weights): the LoRA
   target modules of sft, reward_model, dpo and grpo exist, attention.layers and heads exist, and every
   max length fits the model's context.
3. The data: each Hub source is pinned; local copies of the same files (the profile's
   dry_run.local_copies) are read with the pipeline's own readers, so a schema change stops here.
4. An estimate of GPU memory per stage and of training and generation time (printed; the README
   quotes it and says how it is computed).

Nothing touches the network: HF_HUB_OFFLINE is set before anything is imported from the Hub, and
only for the dry run: the variable is as the user had it again when `make run PROFILE=...` starts DVC.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mathpipe.config import from_dict, load_params
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.io import read_json
from mathpipe.tools.profile import load_profile, merge, params_overrides

log = logging.getLogger("mathpipe.tools.dry_run")

OFFLINE_ENV = "HF_HUB_OFFLINE"
GIB = 1024**3
# Assumptions of the estimate, stated where it is printed.
EFFECTIVE_TFLOPS = 300.0  # bf16 training on an H100: about 30% of the 989 TFLOPS dense peak
DECODE_TOKENS_PER_SECOND = 20_000  # vLLM, 0.6B model, one H100, large batches (order of magnitude)
MEAN_TRAIN_TOKENS_FRACTION = 0.5  # mean sequence length as a share of the length filter


@dataclass
class DryRunSettings:
    model_config: str | None = None
    local_copies: dict[str, str] = field(default_factory=dict)
    gpu_memory_gib: float = 80.0
    gpus: int = 8


def check_pair_lengths(configs: dict) -> str:
    """The preference trainers' max_length must hold the longest answer they are given plus a
    prompt, or the trainer cuts the very tokens that tell chosen from rejected. The stages check
    the real pairs; this catches it before the GPUs start, from the producing stage's own limit."""
    rejection, dpo, prepare = configs["rejection_sampling"], configs["dpo"], configs["prepare"]
    answers = rejection.generation.max_new_tokens
    dpo_length, reward_length = (trainer_arguments(configs, name).max_length for name in ("dpo", "reward_model"))
    if dpo.pairs.hub is None and Path(rejection.out_dir) in Path(dpo.pairs.train_files).parents:
        if dpo_length <= answers:
            raise ConfigError(f"dpo.train.max_length: {dpo_length} cannot hold a prompt and an answer of "
                              f"rejection_sampling.generation.max_new_tokens ({answers}) tokens")
        if Path(prepare.out_dir) in Path(rejection.prompts_file).parents:  # prompts from prepare: bounded there
            bounded = prepare.filters.max_prompt_tokens is not None
            prompt = prepare.filters.max_prompt_tokens if bounded else prepare.filters.max_tokens
            if dpo_length < prompt + answers:
                bound = ("prepare.filters.max_prompt_tokens" if bounded else
                         "prepare.filters.max_tokens, with prepare.filters.max_prompt_tokens null")
                raise ConfigError(f"dpo.train.max_length: {dpo_length} cannot hold a prompt of up to {prompt} tokens "
                                  f"({bound}) and an answer of rejection_sampling.generation.max_new_tokens "
                                  f"({answers}): DPO would leave such pairs out; lower the prompt bound or raise "
                                  "max_length")
    reward = configs["reward_model"]
    if Path(prepare.out_dir) in Path(reward.train_file).parents and prepare.filters.max_tokens is not None:
        if reward_length < prepare.filters.max_tokens:
            raise ConfigError(f"reward_model.train.max_length: {reward_length} is shorter than the pairs "
                              f"prepare keeps (prepare.filters.max_tokens: {prepare.filters.max_tokens})")
    return "pair lengths: dpo and reward_model max_length hold the pairs they are given"


def section_classes() -> dict:
    """params.yaml's sections and the config class each is read into."""
    from mathpipe.data.prepare import PrepareConfig
    from mathpipe.data.sample_data import SampleConfig
    from mathpipe.evaluation.attention import AttentionConfig
    from mathpipe.evaluation.evaluate import EvaluateConfig
    from mathpipe.evaluation.report import ReportConfig
    from mathpipe.prompts import PromptConfig
    from mathpipe.training.base_model import BaseModelConfig
    from mathpipe.training.dpo import DPOStageConfig
    from mathpipe.training.grpo import GRPOStageConfig
    from mathpipe.training.merge import MergeConfig
    from mathpipe.training.rejection_sampling import RejectionConfig
    from mathpipe.training.reward_model import RewardStageConfig
    from mathpipe.training.sft import SFTStageConfig

    return {"prompt": PromptConfig, "sample": SampleConfig, "base_model": BaseModelConfig, "prepare": PrepareConfig,
            "sft": SFTStageConfig, "rft": SFTStageConfig, "reward_model": RewardStageConfig,
            "rejection_sampling": RejectionConfig, "dpo": DPOStageConfig, "grpo": GRPOStageConfig,
            "merge": MergeConfig, "evaluate": EvaluateConfig, "attention": AttentionConfig, "report": ReportConfig}


def section_configs(params: dict) -> dict:
    """Every stage's parameter section, parsed and validated: errors name the key."""
    from mathpipe.prompts import chat_template_file

    classes = section_classes()
    configs = {name: from_dict(cls, params.get(name), name) for name, cls in classes.items()}
    if configs["sft"].chat_template:
        chat_template_file(configs["sft"].chat_template, "sft.chat_template")
    return configs


def model_config_dict(base, settings: DryRunSettings) -> tuple[dict, str]:
    """config.json of the base model, and where it came from; never downloads."""
    if base.source == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(base.hub.model_id, "config.json", revision=base.hub.revision)
        if isinstance(cached, str):
            return read_json(cached), f"the local Hub cache ({cached})"
        if settings.model_config:
            return read_json(settings.model_config), f"{settings.model_config} (not in the local Hub cache)"
        raise PipelineError(f"{base.hub.model_id}@{base.hub.revision} is not in the local Hub cache and the "
                            "profile gives no dry_run.model_config")
    if base.source == "local":
        return read_json(Path(base.local_path) / "config.json"), f"{base.local_path}/config.json"
    return {"model_type": "qwen3", **base.tiny.architecture(base.tiny.vocab_size)}, "base_model.tiny"


def meta_models(config: dict):
    """(causal LM, one-logit classifier) with the model's architecture and no weights."""
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoModelForSequenceClassification

    values = {k: v for k, v in config.items() if not k.startswith("_")}
    model_type = values.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise PipelineError(f"model_type {model_type!r} is not one transformers knows")
    cfg = CONFIG_MAPPING[model_type](**values)
    classifier_cfg = CONFIG_MAPPING[model_type](**values, num_labels=1)
    with torch.device("meta"):
        causal = AutoModelForCausalLM.from_config(cfg)
        classifier = AutoModelForSequenceClassification.from_config(classifier_cfg)
    return cfg, causal, classifier


def trainer_arguments(configs: dict, name: str):
    """<name>.train through TRL's config class as the stage builds it: an unknown name or a
    combination TRL refuses stops here. Built for the CPU: TRL's checks do not depend on the device
    (the one that does, bf16 without a GPU, would fail a GPU profile on the machine that checks it)."""
    if name == "grpo":
        from mathpipe.training.grpo import grpo_args

        return grpo_args(configs[name], "cpu", None, name)
    return configs[name].arguments(name, "cpu")


def check_model(configs: dict, cfg, causal, classifier, gpus_available: int) -> list[str]:
    """LoRA targets, attention layers and heads, lengths: every one names its key when wrong."""
    from mathpipe.evaluation.attention import resolve_heads, resolve_layers
    from mathpipe.training.trainer import lora_config

    lines = []
    for name, model, task in (("sft", causal, "CAUSAL_LM"), ("reward_model", classifier, "SEQ_CLS"),
                              ("dpo", causal, "CAUSAL_LM"), ("grpo", causal, "CAUSAL_LM")):
        lora = lora_config(model, configs[name].lora, f"{name}.lora", task_type=task)
        targets = "targets " + ", ".join(sorted(lora.target_modules)) if lora else "full fine-tuning"
        lines.append(f"{name}.lora: {targets}")
    attention = configs["attention"]
    layers = resolve_layers(attention.layers, cfg.num_hidden_layers, "attention.layers")
    resolve_heads(attention.heads, cfg.num_attention_heads, "attention.heads")
    lines.append(f"attention.layers: {layers} of {cfg.num_hidden_layers}")
    context = cfg.max_position_embeddings
    lengths = {"prepare.filters.max_tokens": configs["prepare"].filters.max_tokens,
               **{f"{name}.train.max_length": trainer_arguments(configs, name).max_length
                  for name in ("sft", "reward_model", "dpo")},
               "grpo.train.max_completion_length": trainer_arguments(configs, "grpo").max_completion_length}
    for stage in ("evaluate", "rejection_sampling"):
        engine = configs[stage].engine
        if engine.max_model_len is not None:
            lengths[f"{stage}.engine.max_model_len"] = engine.max_model_len
            generation = configs[stage].generation.max_new_tokens
            if generation >= engine.max_model_len:
                raise ConfigError(f"{stage}.generation.max_new_tokens: {generation} leaves no room for the prompt "
                                  f"in {stage}.engine.max_model_len {engine.max_model_len}")
        gpus = engine.data_parallel_size * engine.tensor_parallel_size
        if engine.backend == "vllm" and gpus > gpus_available:
            raise ConfigError(f"{stage}.engine.data_parallel_size: {engine.data_parallel_size} engines x "
                              f"{engine.tensor_parallel_size} GPUs need {gpus} GPUs; dry_run.gpus is {gpus_available}")
    for key, value in lengths.items():
        if value is not None and value > context:
            raise ConfigError(f"{key}: {value} is longer than the model's context ({context} tokens)")
    lines.append(f"lengths: all within the model's context of {context:,} tokens")
    lines.append(check_pair_lengths(configs))
    return lines


def check_data(configs: dict, settings: DryRunSettings) -> list[str]:
    """Hub sources pinned; local copies of them read with the pipeline's readers."""
    from mathpipe.data import readers
    from mathpipe.data.prepare import EVAL_FILES, eval_rows
    from mathpipe.data.schemas import CMATH_GOLD_FIELD, CMATH_QUESTION_FIELDS, GSM8K_FIELDS, MATH_FIELDS, OPENR1_SCHEMA

    expected = {"openr1": ", ".join(OPENR1_SCHEMA.names), "gsm8k_train": ", ".join(GSM8K_FIELDS),
                "gsm8k_test": ", ".join(GSM8K_FIELDS),
                "cmath_test": f"{' or '.join(CMATH_QUESTION_FIELDS)}, {CMATH_GOLD_FIELD}",
                "math_test": ", ".join(MATH_FIELDS)}
    benchmark_of = {source: benchmark for benchmark, source in EVAL_FILES.items()}
    prepare = configs["prepare"]
    lines = []
    needed = {"openr1": "openr1" in prepare.sft_sources, "gsm8k_train": "gsm8k" in prepare.sft_sources}
    if prepare.source == "hub":
        for name in expected:
            source = getattr(prepare.hub, name)
            if source is None and not needed.get(name, True):
                continue  # not an SFT source here (as prepare itself decides)
            if source is None:
                raise ConfigError(f"prepare.hub.{name}: required when prepare.source is hub")
            lines.append(f"{name}: {source.repo}@{source.revision[:12]} {source.files}; columns read: {expected[name]}")
    for name, path in settings.local_copies.items():
        path = Path(path)
        if not path.is_file():
            lines.append(f"{name}: local copy {path} not here, not checked")
            continue
        if name in benchmark_of:  # read and checked (gold answers included) as prepare does
            rows = len(eval_rows(benchmark_of[name], [path]))
        elif name == "gsm8k_train":
            rows = sum(1 for _ in readers.iter_gsm8k([path]))
        elif name == "openr1":
            readers.check_parquet_schema(path, OPENR1_SCHEMA.names)
            rows = None
        else:
            raise ConfigError(f"dry_run.local_copies.{name}: unknown source (known: {', '.join(expected)})")
        counted = f": {rows:,} rows" if rows else ""
        lines.append(f"{name}: local copy {path} read with the pipeline's reader{counted}")
    return lines


def estimate(configs: dict, cfg, causal, settings: DryRunSettings) -> list[str]:
    """GPU memory per stage and time, from the parameter count and the params (an estimate)."""
    params = sum(p.numel() for p in causal.parameters())
    layers, hidden, vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", hidden // cfg.num_attention_heads)
    kv_bytes_per_token = 2 * layers * cfg.num_key_value_heads * head_dim * 2
    gpus = settings.gpus
    rows = [f"parameters: {params / 1e9:.2f} B; bf16 weights {params * 2 / GIB:.1f} GiB; "
            f"KV cache {kv_bytes_per_token / 1024:.0f} KiB per token"]

    def train_memory(name: str, sequences_per_example: int, length: int | None = None) -> tuple[float, int]:
        c, args = configs[name], trainer_arguments(configs, name)
        from mathpipe.training.trainer import lora_config

        lora = lora_config(causal, c.lora, f"{name}.lora")
        trainable = lora_parameters(causal, lora) if lora else params
        batch = args.per_device_train_batch_size * sequences_per_example * (2 if name == "dpo" else 1)  # + reference
        length = length or args.max_length
        width = 4 if c.dtype == "float32" else 2  # bytes per value: fp32 (a CPU run) or bf16
        weights = params * width + trainable * 16  # trainable: weight + grad + fp32 Adam m, v, master
        checkpointed = args.gradient_checkpointing
        activations = batch * length * hidden * width * ((layers + 16) if checkpointed else 34 * layers)
        logits = 0 if name == "reward_model" else batch * length * vocab * (width + 4)  # logits + fp32 loss copy
        return (weights + activations + logits) / GIB, trainable

    records = configs["prepare"].max_train_rows or 94_000
    mean_tokens = (configs["prepare"].filters.max_tokens or 4096) * MEAN_TRAIN_TOKENS_FRACTION
    dpo_pairs = configs["dpo"].max_train_samples or configs["rejection_sampling"].max_prompts or records
    for name, per_example, examples in (("sft", 1, configs["sft"].max_train_samples or records),
                                        ("reward_model", 2, configs["reward_model"].max_train_samples or records),
                                        ("dpo", 2, dpo_pairs)):
        memory, trainable = train_memory(name, per_example)
        args = trainer_arguments(configs, name)
        if args.max_steps > 0:  # max_steps overrides epochs
            examples = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * gpus
        else:
            examples *= args.num_train_epochs
        tokens = examples * per_example * mean_tokens
        flops = 6 * params * tokens * (4 / 3 if args.gradient_checkpointing else 1)
        if name == "dpo":
            flops *= 4 / 3  # the reference model's forward pass
        minutes = flops / (EFFECTIVE_TFLOPS * 1e12 * gpus) / 60
        flag = "" if memory <= settings.gpu_memory_gib else f"  > {settings.gpu_memory_gib:g} GiB: lower batch_size"
        rows.append(f"{name}: ~{memory:.0f} GiB per GPU, {trainable / 1e6:.1f} M trainable; "
                    f"~{tokens / 1e6:.0f} M tokens, ~{max(minutes, 1):.0f} min on {gpus} GPUs{flag}")
    rows.append(grpo_estimate(configs, settings, train_memory, params))
    rs = configs["rejection_sampling"]
    samples = (rs.max_prompts or records) * rs.generation.n
    gen_tokens = samples * rs.generation.max_new_tokens * 0.5
    engines, tp = rs.engine.data_parallel_size, rs.engine.tensor_parallel_size
    utilization = rs.engine.gpu_memory_utilization
    rows.append(f"rejection_sampling: {engines} vLLM engine(s) x {tp} GPU(s) at {utilization:.0%}, "
                f"~{max(0.0, utilization * settings.gpu_memory_gib - params * 2 / GIB):.0f} GiB "
                f"of KV cache each; {samples:,} samples, ~{gen_tokens / 1e6:.0f} M tokens, "
                f"~{gen_tokens / (DECODE_TOKENS_PER_SECOND * engines * tp) / 60:.0f} min")
    ev = configs["evaluate"]
    questions = sum(min(n, ev.max_samples or n) for n in (1319, 1098, 500))
    eval_tokens = questions * ev.generation.n * ev.generation.max_new_tokens * 0.5
    gpus_per_eval = ev.engine.data_parallel_size * ev.engine.tensor_parallel_size
    rows.append(f"evaluate: ~{eval_tokens / 1e6:.1f} M tokens per model "
                f"(GSM8K, CMATH, MATH-500; {ev.generation.n} answers per question), "
                f"~{max(1, eval_tokens / (DECODE_TOKENS_PER_SECOND * gpus_per_eval) / 60):.0f} min "
                f"per model on {gpus_per_eval} GPU(s), {len(ev.models)} models")
    rows.append(f"(assumed: {EFFECTIVE_TFLOPS:.0f} TFLOPS per GPU in training, {DECODE_TOKENS_PER_SECOND:,} tokens/s "
                f"per GPU in generation, mean length {MEAN_TRAIN_TOKENS_FRACTION:.0%} of the length filter, "
                "generations half of max_new_tokens)")
    return rows


def grpo_estimate(configs: dict, settings: DryRunSettings, train_memory, params: int) -> str:
    """GRPO's memory per GPU (training, plus the share its colocated vLLM engine takes) and time
    (generation of every completion, then training on them)."""
    args, prepare = trainer_arguments(configs, "grpo"), configs["prepare"]
    prompt = prepare.filters.max_prompt_tokens or prepare.filters.max_tokens
    memory, trainable = train_memory("grpo", 1, prompt + args.max_completion_length)
    colocated = args.use_vllm and args.vllm_mode == "colocate"
    vllm = args.vllm_gpu_memory_utilization * settings.gpu_memory_gib if colocated else 0.0
    steps = args.max_steps if args.max_steps > 0 else None
    completions = (steps or 1) * args.per_device_train_batch_size * args.gradient_accumulation_steps * settings.gpus
    tokens = completions * args.max_completion_length * 0.5
    generate = tokens / (DECODE_TOKENS_PER_SECOND * settings.gpus) / 60
    train = 6 * params * completions * (prompt * MEAN_TRAIN_TOKENS_FRACTION + args.max_completion_length * 0.5) * (
        4 / 3 if args.gradient_checkpointing else 1) / (EFFECTIVE_TFLOPS * 1e12 * settings.gpus) / 60
    engine = (f" + {vllm:.0f} GiB for its colocated vLLM engine (vllm_gpu_memory_utilization "
              f"{args.vllm_gpu_memory_utilization:g})" if colocated else
              (" (vLLM in server mode, on GPUs of its own)" if args.use_vllm else " (generation with transformers)"))
    total = memory + vllm
    flag = ("" if total <= settings.gpu_memory_gib else
            f"  > {settings.gpu_memory_gib:g} GiB: lower batch_size or the vLLM share")
    when = f"{steps} steps" if steps else "per step"
    return (f"grpo: ~{memory:.0f} GiB per GPU for training{engine}, ~{total:.0f} GiB in all, "
            f"{trainable / 1e6:.1f} M trainable; {completions:,} completions over {when}, "
            f"~{tokens / 1e6:.0f} M generated tokens, ~{max(generate, 1):.0f} min generating and "
            f"~{max(train, 1):.0f} min training on {settings.gpus} GPUs{flag}")


def lora_parameters(model, lora) -> int:
    """Parameters LoRA (a PEFT LoraConfig) adds: r x (in + out) for each targeted linear layer."""
    import torch

    total = 0
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        targeted = (short != "lm_head" if lora.target_modules == "all-linear"
                    else short in (lora.target_modules or ()))
        if isinstance(module, torch.nn.Linear) and targeted:
            total += lora.r * (module.in_features + module.out_features)
    return total


@contextlib.contextmanager
def hub_offline():
    """HF_HUB_OFFLINE=1 while the dry run checks, the user's own value (or none) again after it, so
    that what runs next (the profile's `dvc exp run`, its stages' downloads) is not left offline."""
    previous = os.environ.get(OFFLINE_ENV)
    os.environ[OFFLINE_ENV] = "1"  # before huggingface_hub is imported anywhere
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(OFFLINE_ENV, None)
        else:
            os.environ[OFFLINE_ENV] = previous


def dry_run(profile: str | None) -> int:
    with hub_offline():
        try:
            params = load_params()
            raw = load_profile(profile) if profile else {}
            settings = from_dict(DryRunSettings, raw.get("dry_run"), "dry_run")
            merged = merge(params, params_overrides(raw))
            configs = section_configs(merged)
            print(f"params: params.yaml{' + profiles/' + profile if profile else ''}: every section valid")
            config, origin = model_config_dict(configs["base_model"], settings)
            print(f"model config: {origin}")
            cfg, causal, classifier = meta_models(config)
            for line in check_model(configs, cfg, causal, classifier, settings.gpus) + check_data(configs, settings):
                print(f"  ok  {line}")
            print("estimate:")
            reproduced = {name.split("@")[0] for name in raw.get("stages") or []}
            for line in estimate(configs, cfg, causal, settings):
                stage = line.split(":")[0]
                if not reproduced or stage not in configs or stage in reproduced:  # the stages a run reaches
                    print(f"      {line}")
        except PipelineError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print("dry run passed: nothing was downloaded")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mathpipe.cli import setup_logging

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", nargs="?", help="a name under profiles/ or a yaml file (none: params.yaml alone)")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return dry_run(args.profile)


if __name__ == "__main__":
    sys.exit(main())
