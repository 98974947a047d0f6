"""Attention weights of a model on its own answer to a reasoning prompt.

    cfg = from_dict(AttentionConfig, params["attention"], "attention")
    layers = resolve_layers(cfg.layers, num_layers, "attention.layers")   # before loading weights
    weights = attention_weights(model, token_ids, layers)                 # [layers, heads, T, T]
    labels = token_labels(tokenizer, token_ids)                           # one readable label per token

The model first answers the prompt (through the one generation interface); one forward pass over
prompt + answer with eager attention then returns the weights (SDPA and flash kernels return none).
Layers and heads are checked against the model's config.json before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mathpipe import prompts as prompt_registry
from mathpipe.config import check, check_positive
from mathpipe.errors import ConfigError, PipelineError
from mathpipe.generation import EngineSettings, GenerationSettings
from mathpipe.io import read_json, require_file, write_json

LAYER_NAMES = ("first", "middle", "last")
CONTINUATION = "…"  # label of a token that holds only part of a character (byte-level BPE)


@dataclass(kw_only=True)
class WindowSettings:
    """The square of tokens drawn: `size` tokens from `start` (negative: counted from the end)."""

    start: int
    size: int | None  # null: the whole sequence

    def validate(self, prefix: str) -> None:
        if self.size is not None:
            check_positive(self.size, f"{prefix}.size")


@dataclass(kw_only=True)
class AttentionConfig:
    models: list[str]
    models_dir: str
    prompts: dict[str, str]  # name -> question
    template: str
    layers: list[int | Literal["first", "middle", "last"]]
    heads: Literal["mean", "all"] | list[int]  # mean over heads | one panel per head | chosen heads
    compare_layers: list[int | Literal["first", "middle", "last"]]
    window: WindowSettings
    color_scale: Literal["linear", "sqrt", "log"]
    max_label_chars: int
    dpi: int
    data_dir: str
    plots_dir: str
    engine: EngineSettings
    generation: GenerationSettings

    def validate(self, prefix: str) -> None:
        check(bool(self.models), f"{prefix}.models", "must name at least one model")
        check("compare" not in self.models, f"{prefix}.models",
              "'compare' is the folder of the side-by-side figures; rename that model")
        check(bool(self.prompts), f"{prefix}.prompts", "must hold at least one prompt (name: question)")
        for name, question in self.prompts.items():
            check(isinstance(name, str) and name.replace("_", "").replace("-", "").isalnum(),
                  f"{prefix}.prompts.{name}", "a prompt name must be letters, digits, '-' or '_' (it names files)")
            check(bool(question.strip()), f"{prefix}.prompts.{name}", "is empty")
        check(bool(self.layers), f"{prefix}.layers", "must name at least one layer")
        for i, spec in enumerate(self.compare_layers):
            check(spec in self.layers, f"{prefix}.compare_layers[{i}]",
                  f"{spec!r} is not in {prefix}.layers {self.layers}: only those are recorded")
        if isinstance(self.heads, list):
            check(bool(self.heads), f"{prefix}.heads", "an empty list: use mean or all")
        check_positive(self.max_label_chars, f"{prefix}.max_label_chars")
        check_positive(self.dpi, f"{prefix}.dpi")
        check(self.generation.n == 1, f"{prefix}.generation.n", "the attention map is of one answer")
        prompt_registry.instruction(self.template)


def layer_stem(spec: int | str) -> str:
    """File-name part for a layer spec: 'first', 'layer2', 'layer-1'."""
    return spec if isinstance(spec, str) else f"layer{spec}"


def resolve_layers(specs: list[int | str], num_layers: int, key: str) -> list[int]:
    """Layer specs (first/middle/last or an index, negative from the end) to 0-based indices."""
    named = {"first": 0, "middle": num_layers // 2, "last": num_layers - 1}
    layers = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            layers.append(named[spec])
        elif -num_layers <= spec < num_layers:
            layers.append(spec % num_layers)
        else:
            raise ConfigError(f"{key}[{i}]: layer {spec} does not exist: the model has {num_layers} layers "
                              f"(0 to {num_layers - 1}, or -{num_layers} to -1)")
    return layers


def resolve_heads(spec: str | list[int], num_heads: int, key: str) -> list[int] | None:
    """None for the mean over heads, else the head indices to draw one panel each."""
    if spec == "mean":
        return None
    if spec == "all":
        return list(range(num_heads))
    for i, head in enumerate(spec):
        if not 0 <= head < num_heads:
            raise ConfigError(f"{key}[{i}]: head {head} does not exist: the model has {num_heads} "
                              f"attention heads (0 to {num_heads - 1})")
    return list(spec)


def model_shape(model_dir: str | Path) -> tuple[int, int]:
    """(layers, attention heads) from config.json, without loading the weights."""
    config = read_json(require_file(Path(model_dir) / "config.json", "model config"))
    config = config.get("text_config", config)  # multimodal configs nest the language model's
    try:
        return int(config["num_hidden_layers"]), int(config["num_attention_heads"])
    except KeyError as e:
        raise PipelineError(f"{model_dir}/config.json: no {e.args[0]}; cannot check attention.layers") from None


def window_bounds(window: WindowSettings, length: int, key: str) -> tuple[int, int]:
    """[lo, hi) of the tokens drawn on each axis."""
    lo = window.start if window.start >= 0 else max(0, length + window.start)
    if lo >= length:
        raise ConfigError(f"{key}.start: {window.start} is past the end of the sequence ({length} tokens)")
    hi = length if window.size is None else min(length, lo + window.size)
    return lo, hi


def token_labels(tokenizer, ids: list[int], max_chars: int = 12) -> list[str]:
    """One readable label per token: its text as decoded in context.

    Decoding each prefix and keeping what the last token added gives whole characters even where
    byte-level BPE splits one (common for Chinese): the token that completes a character carries it,
    the ones before it are shown as '…'. Spaces show as '␣', newlines as '↵'.
    """
    labels, previous = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False).rstrip("\ufffd")
        piece = text[len(previous):] if text.startswith(previous) else tokenizer.decode(ids[i : i + 1])
        previous = text
        labels.append(_readable(piece, max_chars) if piece else CONTINUATION)
    return labels


def _readable(piece: str, max_chars: int) -> str:
    piece = piece.replace("\n", "↵").replace("\t", "⇥").replace(" ", "␣")
    return piece if len(piece) <= max_chars else piece[: max_chars - 1] + "…"


def attention_weights(model, ids: list[int], layers: list[int]) -> np.ndarray:
    """Weights of the chosen layers, [len(layers), heads, T, T], from one eager forward pass."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=model.device), output_attentions=True, use_cache=False)
    attentions = out.attentions
    if not attentions or any(attentions[layer] is None for layer in layers):
        raise PipelineError("the model returned no attention weights: load it with attn_implementation='eager'")
    return np.stack([attentions[layer][0].float().cpu().numpy() for layer in layers])


@dataclass
class AttentionRecord:
    """One model's answer to one prompt and its attention weights, as saved for the plots."""

    model: str
    prompt_name: str
    question: str
    answer: str
    labels: list[str]
    prompt_tokens: int
    layer_specs: list[int | str]
    layers: list[int]
    num_layers: int
    num_heads: int
    weights: np.ndarray  # [len(layers), heads, T, T]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / f"{self.prompt_name}.npz", weights=self.weights.astype(np.float32))
        meta = {k: v for k, v in self.__dict__.items() if k != "weights"}
        write_json(directory / f"{self.prompt_name}.json", meta)

    @classmethod
    def load(cls, directory: str | Path, prompt_name: str) -> AttentionRecord:
        directory = Path(directory)
        meta = read_json(require_file(directory / f"{prompt_name}.json", "attention record"))
        with np.load(require_file(directory / f"{prompt_name}.npz", "attention weights")) as data:
            weights = data["weights"]
        return cls(**meta, weights=weights)


def record_attention(model_name: str, model_dir: str | Path, cfg: AttentionConfig,
                     chat_template_kwargs: dict | None = None) -> list[AttentionRecord]:
    """Each prompt of cfg.prompts answered by the model, then its attention weights on prompt + answer."""
    from mathpipe.generation import make_generator
    from mathpipe.models import load_causal_lm

    num_layers, num_heads = model_shape(model_dir)
    layers = resolve_layers(cfg.layers, num_layers, "attention.layers")
    resolve_heads(cfg.heads, num_heads, "attention.heads")

    generator = make_generator(str(model_dir), cfg.engine)
    try:
        tokenizer = generator.tokenizer
        rendered = [prompt_registry.render_prompt(tokenizer, q, cfg.template, chat_template_kwargs)
                    for q in cfg.prompts.values()]
        answers = [c[0].text for c in generator.generate(rendered, cfg.generation)]
    finally:
        generator.close()

    model = load_causal_lm(model_dir, dtype=cfg.engine.dtype, attn_implementation="eager",
                           trust_remote_code=cfg.engine.trust_remote_code)
    records = []
    for (name, question), prompt, answer in zip(cfg.prompts.items(), rendered, answers):
        # Prompt and answer are tokenized apart so the boundary between them is exact.
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + tokenizer(answer, add_special_tokens=False)["input_ids"]
        records.append(AttentionRecord(
            model=model_name, prompt_name=name, question=question, answer=answer,
            labels=token_labels(tokenizer, ids, cfg.max_label_chars), prompt_tokens=len(prompt_ids),
            layer_specs=list(cfg.layers), layers=layers, num_layers=num_layers, num_heads=num_heads,
            weights=attention_weights(model, ids, layers),
        ))
    return records
