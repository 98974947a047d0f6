"""The embedded default model: a tiny Qwen3 with a byte-level BPE tokenizer trained on the corpus.

    tokenizer = train_tokenizer(texts, vocab_size=1024)
    model = build_model(tokenizer, from_params(TinyModelConfig, "base_model.tiny"), seed=0)

Both are ordinary `transformers` objects: `save_pretrained` writes a folder that `from_pretrained`,
TRL and vLLM load like any Hub checkpoint. head_dim is 64 because vLLM's CPU attention kernels
reject 16 (measured, see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from mathpipe.config import check, check_positive

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK_TOKENS = ("<think>", "</think>")

# Qwen2/3's pre-tokenizer split: digits one at a time, which helps arithmetic a lot.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's chat format. `{% generation %}` marks what the assistant says, so TRL can compute the
# loss on assistant tokens only; the target ends with <|im_end|>, which is the EOS token. As in
# Qwen3's template, `enable_thinking=false` ends the generation prompt with an empty thinking block,
# and an answer without one is given it, so non-thinking targets and prompts agree.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{%- if '</think>' not in message['content'] %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message['content'] + '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@dataclass(kw_only=True)
class TinyModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    # Std of the random initial weights; null: 1/sqrt(hidden_size). Qwen3's 0.02 suits its 1024-wide
    # layers; at width 128 it leaves attention logits so flat that the model takes far longer to
    # learn to look back at the question (measured: no use of the question after 3 epochs of SFT).
    initializer_range: float | None

    def init_std(self) -> float:
        return self.initializer_range if self.initializer_range is not None else self.hidden_size ** -0.5

    def architecture(self, vocab_size: int) -> dict:
        """The shape keys of the Qwen3 config (tied embeddings, like Qwen3-0.6B, so the LoRA and merge
        paths meet tied weights); vocab_size is the trained tokenizer's."""
        return {"vocab_size": vocab_size, "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "num_key_value_heads": self.num_key_value_heads, "head_dim": self.head_dim,
                "max_position_embeddings": self.max_position_embeddings, "tie_word_embeddings": True}

    def validate(self, prefix: str) -> None:
        if self.initializer_range is not None:
            check_positive(self.initializer_range, f"{prefix}.initializer_range")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            check_positive(getattr(self, name), f"{prefix}.{name}")
        check(self.vocab_size >= 300, f"{prefix}.vocab_size",
              "must be >= 300 (256 byte tokens + special tokens + merges)")
        check(self.num_attention_heads % self.num_key_value_heads == 0, f"{prefix}.num_key_value_heads",
              "must divide num_attention_heads")


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [PAD, IM_START, IM_END]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(THINK_TOKENS),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # <think> and </think> are single tokens but not "special": decoding keeps them, as in Qwen3.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(tokenizer: PreTrainedTokenizerFast, cfg: TinyModelConfig, seed: int) -> Qwen3ForCausalLM:
    eos = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen3Config(
        **cfg.architecture(len(tokenizer)),
        initializer_range=cfg.init_std(),
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, bos_token_id=None)
    return model
