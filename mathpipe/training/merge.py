"""Merge a LoRA adapter into its base and save a standalone checkpoint; check it is the same model.

    summary = merge_adapter(base_dir, adapter_dir, out_dir, cfg)

The merged folder holds safetensors weights, the tokenizer, the generation config and
mathpipe.json (where the model came from, nothing measured: the folder hashes the same whatever
the probe settings), so `from_pretrained` and vLLM load it like any other model. Three figures:

- the merge: logits of the merged weights against base + adapter (the model as trained), both in
  float32, on probe sequences; above `cfg.tolerance` nothing is written (a wrong merge);
- the save: the checkpoint loaded back from disk must hold exactly the weights saved (catches a
  broken embedding tie or a dropped head);
- the cast: logits of the saved dtype (bf16 for a bf16 base) against float32, reported, not checked:
  bf16 keeps 8 bits of mantissa, so over many layers and a large vocabulary this is far above any
  merge error, and a LoRA update smaller than about 0.4% of a weight is rounded away (README).

Probes run one sequence at a time, each cut to `probe_max_tokens`: no batch x length x vocabulary
tensor of logits is held.
A folder without adapter_config.json is a fully fine-tuned model: it is re-saved as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mathpipe import prompts
from mathpipe.config import check, check_positive
from mathpipe.errors import DataError, PipelineError
from mathpipe.io import atomic_dir, read_jsonl, write_json
from mathpipe.models import ORIGIN_FILE, read_origin, require_model_dir
from mathpipe.training.base_model import fingerprint

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(kw_only=True)
class MergeSpec:
    base: str
    adapter: str
    out: str


@dataclass(kw_only=True)
class MergeConfig:
    models: dict[str, MergeSpec]
    metrics_dir: str  # <name>.json: the merge's checks, kept in git
    probe_file: str  # chat records: prompt + response as probes
    probe_samples: int
    # each probe cut to its first N tokens: a wrong merge shows at every position, while the cost of
    # the four float32 passes grows with length (an R1 trace of 4,096 tokens costs 8x a 512-token cut)
    probe_max_tokens: int
    tolerance: float  # largest allowed |logit difference|, merged vs base + adapter
    save_dtype: str  # auto: the base checkpoint's own dtype
    trust_remote_code: bool

    def validate(self, prefix: str) -> None:
        check(bool(self.models), f"{prefix}.models", "must name at least one adapter to merge")
        check_positive(self.probe_samples, f"{prefix}.probe_samples")
        check_positive(self.probe_max_tokens, f"{prefix}.probe_max_tokens")
        check_positive(self.tolerance, f"{prefix}.tolerance")
        check(self.save_dtype in ("auto", "float32", "bfloat16", "float16"), f"{prefix}.save_dtype",
              f"must be auto, float32, bfloat16 or float16, got '{self.save_dtype}'")


def probe_batch(tokenizer, path: str | Path, n: int, chat_template_kwargs: dict | None = None,
                max_tokens: int | None = None):
    """Token ids and attention mask of the first n chat records, rendered with the chat template,
    each cut to its first max_tokens tokens."""
    rows = read_jsonl(path, required=("messages",))[:n]
    if not rows:
        raise DataError(f"{path}: no records to probe the merged model with")
    texts = [prompts.render(tokenizer, r["messages"], chat_template_kwargs) for r in rows]
    tokenizer.padding_side = "right"
    # A fast tokenizer keeps a call's padding and truncation in its state, and the merged folder's
    # tokenizer.json is saved with it. Every merged model so far was saved after this padded call,
    # so it stays; the cut is made here, not with truncation=True, which would change the hash of
    # every merged model (and re-run everything downstream) whenever probe_max_tokens changes.
    padded = tokenizer(texts, padding=True, add_special_tokens=False)
    ids = [row[:sum(mask)][:max_tokens] for row, mask in zip(padded["input_ids"], padded["attention_mask"])]
    return tokenizer.pad({"input_ids": ids}, return_tensors="pt")


def probe_rows(batch):
    """The probe sequences one at a time, padding cut off (probe_batch pads on the right)."""
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        n = int(mask.sum())
        yield {"input_ids": ids[None, :n], "attention_mask": mask[None, :n]}


def max_logit_difference(model_a, model_b, batch) -> float:
    """Largest |logit difference| of two models over every token of the probes."""
    import torch

    largest = 0.0
    with torch.no_grad():
        for row in probe_rows(batch):
            a = model_a(**row).logits.float()
            difference = a.sub_(model_b(**row).logits.float()).abs_().max().item()  # in place: one tensor less
            if difference != difference:  # NaN: max() would drop it
                return difference
            largest = max(largest, difference)
    return largest


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, cfg: MergeConfig,
                  chat_template_kwargs: dict | None = None) -> dict:
    import copy

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathpipe.models import load_causal_lm, load_tokenizer

    base_dir, adapter_dir = require_model_dir(base_dir), Path(adapter_dir)
    is_adapter = (adapter_dir / ADAPTER_CONFIG).is_file()
    if not is_adapter:
        require_model_dir(adapter_dir)  # a fully fine-tuned model, or nothing usable
    tokenizer = load_tokenizer(base_dir, trust_remote_code=cfg.trust_remote_code)
    batch = probe_batch(tokenizer, cfg.probe_file, cfg.probe_samples, chat_template_kwargs, cfg.probe_max_tokens)
    tokenizer.padding_side = "left"  # the saved tokenizer serves generation

    # Merge in float32 on CPU: the comparison then measures the merge, not rounding. The adapter
    # model is kept beside the merged copy (two copies of the weights) to compare the two.
    load = dict(dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
    if is_adapter:
        trained = PeftModel.from_pretrained(load_causal_lm(base_dir, **load), adapter_dir).eval()
        merged = copy.deepcopy(trained).merge_and_unload()
        merge_error = max_logit_difference(merged, trained, batch)
        del trained
        method = "lora"
    else:
        merged, merge_error, method = load_causal_lm(adapter_dir, **load), 0.0, "full"
    if not merge_error <= cfg.tolerance:  # `not <=` also catches NaN
        raise PipelineError(
            f"merge of {adapter_dir}: merged weights differ from base + adapter by {merge_error:.3g} in logits "
            f"(merge.tolerance is {cfg.tolerance:g}); nothing was written"
        )
    save_dtype = _save_dtype(cfg.save_dtype, base_dir, cfg.trust_remote_code)
    cast_error = 0.0
    if save_dtype != torch.float32:
        cast = copy.deepcopy(merged).to(save_dtype).to(torch.float32)
        cast_error = max_logit_difference(cast, merged, batch)
        del cast

    base_origin = read_origin(base_dir)
    with atomic_dir(out_dir) as tmp:
        merged.to(save_dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=save_dtype, use_safetensors=True,
                                                        trust_remote_code=cfg.trust_remote_code)
        saved, expected = reloaded.state_dict(), merged.state_dict()
        lost = sorted(n for n in expected if n not in saved or not torch.equal(saved[n], expected[n]))
        if lost:
            raise PipelineError(f"merge of {adapter_dir}: the saved checkpoint does not hold the merged weights "
                                f"of {', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}; nothing was written")
        origin = {
            "method": method,
            "base": str(base_dir),
            "adapter": str(adapter_dir),
            "model_id": base_origin.get("model_id"),
            "base_revision": base_origin.get("revision"),
            "revision": fingerprint(tmp),
            "dtype": str(save_dtype).removeprefix("torch."),
            "tie_word_embeddings": bool(getattr(reloaded.config, "tie_word_embeddings", False)),
        }
        write_json(tmp / ORIGIN_FILE, origin)
    summary = {**origin, "max_abs_logit_diff": merge_error, "tolerance": cfg.tolerance,
               "cast_abs_logit_diff": cast_error, "probe_tokens": int(batch["attention_mask"].sum())}
    log.info("%s -> %s: max |logit diff| %.3g from the merge, %.3g from saving in %s, over %d probe tokens",
             adapter_dir, out_dir, merge_error, cast_error, origin["dtype"], summary["probe_tokens"])
    return summary


def _save_dtype(name: str, base_dir: Path, trust_remote_code: bool):
    import torch
    from transformers import AutoConfig

    if name != "auto":
        return getattr(torch, name)
    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype
