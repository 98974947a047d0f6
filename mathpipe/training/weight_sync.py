"""GRPO's weight sync to its vLLM engine, without drifting the policy's base weights.

    trainer_class = drift_free(GRPOTrainer)      # run_grpo trains with it

TRL (1.16) sends a LoRA policy's weights to vLLM by merging the adapter into the base weights in
place (W += BA), reading them, and unmerging (W -= BA). In bf16 each of those rounds, and the
roundings do not cancel: the base weights drift a little at every sync (upstream measured 0.28x the
mean |weight| after 100 cycles, huggingface/trl#6688), so rollouts and training use a base that is
no longer the SFT model, while merge@grpo applies the adapter to the pristine one.

Here the weights vLLM receives are computed out of place, one layer at a time: W + BA in float32,
rounded once to W's dtype. The base weights are only read. Sharded training (FSDP, ZeRO-3) and DoRA
keep TRL's own path, which gathers the shards before merging (tests/test_weight_sync.py measures both).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import MethodType

log = logging.getLogger(__name__)


def lora_layers_by_weight(model) -> dict[int, object]:
    """id(base weight) -> the LoRA layer wrapping it, for every LoRA layer of a PEFT model."""
    from peft.tuners.lora import LoraLayer

    return {id(module.get_base_layer().weight): module for module in model.modules()
            if isinstance(module, LoraLayer) and hasattr(module.get_base_layer(), "weight")}


def merged_weight(layer):
    """The layer's base weight with its active adapters added, out of place: float32 sums, one rounding."""
    base = layer.get_base_layer().weight
    merged = base.data.float()
    for adapter in layer.active_adapters:
        if adapter in layer.lora_A:
            merged += layer.get_delta_weight(adapter).float()
    return merged.to(base.dtype)


def merged_named_params(generation) -> Iterator[tuple]:
    """What TRL's VLLMGeneration._iter_named_params yields for an unsharded PEFT policy (the names vLLM
    expects, each base weight with the adapter merged), without writing to the model."""
    model = generation.model
    layers = lora_layers_by_weight(model)
    for name, param in model.named_parameters():
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if model.prefix in name or "original_module" in name:  # LoRA's own tensors; a module_to_save's original
            continue
        name = generation._fix_param_name_to_vllm(name, extra_prefixes=["modules_to_save.default."])
        layer = layers.get(id(param))
        yield name, (merged_weight(layer) if layer is not None else param.data)


def uses_dora(model) -> bool:
    return any(getattr(config, "use_dora", False) for config in getattr(model, "peft_config", {}).values())


def use_drift_free_sync(generation) -> bool:
    """Make `generation` (a TRL VLLMGeneration) sync an unsharded, non-DoRA PEFT policy out of place;
    returns whether it did."""
    from peft import PeftModel

    dist = generation._dist
    if not isinstance(generation.model, PeftModel) or dist.is_fsdp or dist.is_zero3 or uses_dora(generation.model):
        return False
    generation._iter_named_params = MethodType(merged_named_params, generation)
    return True


def drift_free(trainer_class):
    """`trainer_class` (GRPOTrainer) whose vLLM engine, when it has one, is synced out of place."""

    class DriftFreeSync(trainer_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            generation = getattr(self, "vllm_generation", None)
            if generation is not None and use_drift_free_sync(generation):
                log.info("vLLM weight sync: the adapter merged out of place (the base weights stay untouched)")

    DriftFreeSync.__name__ = trainer_class.__name__  # the logs and the stage's figures name TRL's trainer
    return DriftFreeSync
