"""Merge a LoRA adapter into its base and save a standalone checkpoint; check it is the same model.

    summary = merge_adapter(base_dir, adapter_dir, out_dir, cfg)

The merged folder holds safetensors weights, the tokenizer, the generation config and
mathpipe.json, so `from_pretrained` and vLLM load it like any other model. After saving, the
checkpoint is loaded back from disk and its logits on probe sequences are compared with base +
adapter (the model as trained): the largest absolute difference is recorded and must stay under
`cfg.tolerance`. Comparing against the reloaded files, not the in-memory merge, also catches
weights lost on save (a broken embedding tie, a dropped head).

A folder without adapter_config.json is a fully fine-tuned model: it is re-saved as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from mathpipe.base_model import fingerprint
from mathpipe.config import check, check_positive
from mathpipe.errors import DataError, PipelineError
from mathpipe.io import atomic_dir, read_jsonl, write_json
from mathpipe.models import ORIGIN_FILE, read_origin, require_model_dir

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class MergeSpec:
    base: str
    adapter: str
    out: str


@dataclass
class MergeConfig:
    models: dict[str, MergeSpec] = field(default_factory=dict)
    probe_file: str = "data/prepared/sft_val.jsonl"  # chat records: prompt + response as probes
    probe_samples: int = 8
    tolerance: float = 1e-3  # largest allowed |logit difference|, merged vs base + adapter
    save_dtype: str = "auto"  # auto: the base checkpoint's own dtype
    trust_remote_code: bool = False

    def validate(self, prefix: str) -> None:
        check(bool(self.models), f"{prefix}.models", "must name at least one adapter to merge")
        check_positive(self.probe_samples, f"{prefix}.probe_samples")
        check_positive(self.tolerance, f"{prefix}.tolerance")
        check(self.save_dtype in ("auto", "float32", "bfloat16", "float16"), f"{prefix}.save_dtype",
              f"must be auto, float32, bfloat16 or float16, got '{self.save_dtype}'")


def probe_batch(tokenizer, path: str | Path, n: int):
    """Token ids and attention mask of the first n chat records, rendered with the chat template."""
    rows = read_jsonl(path, required=("messages",))[:n]
    if not rows:
        raise DataError(f"{path}: no records to probe the merged model with")
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    tokenizer.padding_side = "right"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def max_logit_difference(model_a, model_b, batch) -> float:
    import torch

    with torch.no_grad():
        a = model_a(**batch).logits
        b = model_b(**batch).logits
    mask = batch["attention_mask"].bool()
    return (a - b).abs()[mask].max().item()


def merge_adapter(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, cfg: MergeConfig) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mathpipe.models import load_causal_lm, load_tokenizer

    base_dir, adapter_dir = require_model_dir(base_dir), Path(adapter_dir)
    is_adapter = (adapter_dir / ADAPTER_CONFIG).is_file()
    if not is_adapter:
        require_model_dir(adapter_dir)  # a fully fine-tuned model, or nothing usable
    tokenizer = load_tokenizer(base_dir, trust_remote_code=cfg.trust_remote_code)
    batch = probe_batch(tokenizer, cfg.probe_file, cfg.probe_samples)
    tokenizer.padding_side = "left"  # the saved tokenizer serves generation

    # Merge in float32 on CPU: the comparison then measures the merge, not rounding.
    if is_adapter:
        base = load_causal_lm(base_dir, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
        reference = PeftModel.from_pretrained(base, adapter_dir).eval()
        method = "lora"
    else:
        reference = load_causal_lm(adapter_dir, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
        method = "full"
    with torch.no_grad():
        reference_logits = reference(**batch).logits
    merged = reference.merge_and_unload() if is_adapter else reference
    save_dtype = _save_dtype(cfg.save_dtype, base_dir, cfg.trust_remote_code)

    base_origin = read_origin(base_dir)
    with atomic_dir(out_dir) as tmp:
        merged.to(save_dtype).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, use_safetensors=True,
                                                        trust_remote_code=cfg.trust_remote_code).eval()
        with torch.no_grad():
            merged_logits = reloaded(**batch).logits
        mask = batch["attention_mask"].bool()
        difference = (merged_logits - reference_logits).abs()[mask].max().item()
        if not difference <= cfg.tolerance:  # `not <=` also catches NaN
            raise PipelineError(
                f"merge of {adapter_dir}: merged checkpoint differs from base + adapter by {difference:.3g} "
                f"in logits (merge.tolerance is {cfg.tolerance:g}); nothing was written"
            )
        summary = {
            "method": method,
            "base": str(base_dir),
            "adapter": str(adapter_dir),
            "model_id": base_origin.get("model_id"),
            "base_revision": base_origin.get("revision"),
            "revision": fingerprint(tmp),
            "dtype": str(save_dtype).removeprefix("torch."),
            "max_abs_logit_diff": difference,
            "tolerance": cfg.tolerance,
            "probe_tokens": int(mask.sum()),
            "tie_word_embeddings": bool(getattr(reloaded.config, "tie_word_embeddings", False)),
        }
        write_json(tmp / ORIGIN_FILE, summary)
    log.info("%s -> %s: max |logit diff| %.3g over %d probe tokens", adapter_dir, out_dir, difference,
             summary["probe_tokens"])
    return summary


def _save_dtype(name: str, base_dir: Path, trust_remote_code: bool):
    import torch
    from transformers import AutoConfig

    if name != "auto":
        return getattr(torch, name)
    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype
