"""GRPO's weight sync to vLLM (mathpipe.training.weight_sync): 100 syncs of a bf16 LoRA policy leave
its base weights as they were, where TRL's merge/unmerge in place drifts them."""

from __future__ import annotations

import torch

from mathpipe.tools.gpu_check import sync_view
from mathpipe.training.weight_sync import drift_free, merged_named_params, use_drift_free_sync

SYNCS = 100


def bf16_lora_policy(model_dir, use_dora: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, use_dora=use_dora)  # B random, not 0: a delta to merge
    return get_peft_model(model, config)


def base_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" not in name}


def test_a_hundred_syncs_leave_the_base_weights_as_they_were_where_trls_merge_unmerge_drifts(tiny_model_dir):
    ours, theirs = bf16_lora_policy(tiny_model_dir), bf16_lora_policy(tiny_model_dir)
    before = base_weights(ours)
    assert all(torch.equal(before[n], w) for n, w in base_weights(theirs).items())  # the same model twice
    ours_sync, trl_sync = sync_view(ours), sync_view(theirs)
    # cloned as they stream: TRL yields the live weights, which its unmerge then changes back
    first_ours = {name: t.clone() for name, t in merged_named_params(ours_sync)}
    first_trl = {name: t.clone() for name, t in trl_sync.trl_iter_named_params()}
    assert first_ours.keys() == first_trl.keys()  # the names vLLM expects, as TRL sends them
    for name, tensor in first_ours.items():  # the merged weights vLLM gets: the same, to bf16 rounding
        assert tensor.dtype == first_trl[name].dtype
        torch.testing.assert_close(tensor.float(), first_trl[name].float(), rtol=1 / 64, atol=1e-3)
    for _ in range(SYNCS - 1):
        for _ in merged_named_params(ours_sync):
            pass
        for _ in trl_sync.trl_iter_named_params():
            pass
    after_ours, after_trl = base_weights(ours), base_weights(theirs)
    assert all(torch.equal(before[n], w) for n, w in after_ours.items())  # bit for bit
    merged_layers = [n for n in before if n.endswith(("q_proj.base_layer.weight", "v_proj.base_layer.weight",
                                                      "down_proj.base_layer.weight"))]
    drift = max((after_trl[n].float() - before[n].float()).abs().max().item() for n in merged_layers)
    assert drift > 0, "TRL's in-place merge/unmerge no longer drifts: this module may be unnecessary"


def test_the_drift_free_sync_is_used_only_where_it_holds(tiny_model_dir):
    policy = bf16_lora_policy(tiny_model_dir)
    assert use_drift_free_sync(sync_view(policy))
    assert not use_drift_free_sync(sync_view(policy, zero_stage=3))  # shards: TRL gathers, then merges
    assert not use_drift_free_sync(sync_view(policy, fsdp_version=2))
    assert not use_drift_free_sync(sync_view(bf16_lora_policy(tiny_model_dir, use_dora=True)))
    assert not use_drift_free_sync(sync_view(policy.get_base_model()))  # full fine-tuning: nothing merged


def test_the_trainer_keeps_trls_name():
    from trl import GRPOTrainer

    trainer_class = drift_free(GRPOTrainer)
    assert issubclass(trainer_class, GRPOTrainer) and trainer_class.__name__ == "GRPOTrainer"
