"""GRPO's loss over the completions that carry a gradient: zero-advantage rows and all-padding columns left out.

    trainer_class = informative_rows(GRPOTrainer)      # run_grpo trains with it

A group whose completions all earned one reward gives each of them an advantage of exactly 0. Under
TRL's `dapo` loss (normalised by the completion tokens of the whole generation batch, counted before
the loss) with no KL term (`beta: 0`), such a completion adds exactly 0 to the loss and to every
gradient, yet TRL still runs its forward and backward passes: on the default a third of the groups
are uniform, and forward plus backward is ~60% of a step (`python -m benchmarks.grpo_step`). Here
the loss is computed on the rows whose advantage is not 0, with the columns that are padding in all
of them cut off (prompts are left-padded and completions right-padded to the batch's longest; the
rotary positions are relative, so a shift of every position changes nothing but rounding). The
loss, its gradient and the `num_items_in_batch` normaliser are TRL's own: `tests/test_grpo_batch.py`
holds the gradients to TRL's on the same batch.

Settings under which a zero-advantage row does add to the loss keep TRL's path whole: another
`loss_type` (whose normaliser counts the rows or tokens it is given), a KL term, an entropy bonus or
mask, a MoE auxiliary loss, or inputs this module does not know (images, tools).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Per-row tensors of TRL's (1.16) generation batch that a forward pass over fewer rows can slice.
PROMPT_KEYS = ("prompt_ids", "prompt_mask")
COMPLETION_KEYS = ("completion_ids", "completion_mask", "old_per_token_logps", "ref_per_token_logps",
                   "sampling_per_token_logps", "importance_sampling_ratio")
KNOWN_KEYS = {*PROMPT_KEYS, *COMPLETION_KEYS, "advantages", "num_items_in_batch"}
EXACT_LOSS_TYPES = ("dapo", "cispo")  # normalised by num_items_in_batch, counted over the whole batch


def why_rows_are_needed(trainer) -> str | None:
    """Why a zero-advantage completion can change this trainer's loss, or None when it cannot."""
    if trainer.loss_type not in EXACT_LOSS_TYPES:
        return f"loss_type {trainer.loss_type!r} normalises over the rows it is given"
    if trainer.beta != 0.0:
        return "beta > 0: the KL term counts for every row"
    if trainer.top_entropy_quantile < 1.0:
        return "top_entropy_quantile < 1: the entropy mask's threshold is taken over every row"
    if getattr(trainer, "_entropy_bonus_enabled", False):
        return "an entropy bonus counts for every row"
    if getattr(trainer, "aux_loss_enabled", False):
        return "the MoE auxiliary loss counts for every row"
    return None


def informative_batch(inputs: dict) -> dict:
    """`inputs` (one micro-batch of GRPOTrainer) restricted to the rows whose advantage is not 0 (one row
    when none is, so the step still has a graph), with the columns that are padding in every one of them
    removed; `inputs` itself when it holds anything but the known per-row tensors."""
    import torch

    if set(inputs) - KNOWN_KEYS or inputs["advantages"].dim() != 1:
        return inputs
    keep = inputs["advantages"] != 0
    if not keep.any():
        keep[0] = True
    rows = keep.nonzero().squeeze(-1)
    prompt_cols = inputs["prompt_mask"][rows].any(0).nonzero()
    completion_cols = inputs["completion_mask"][rows].any(0).nonzero()
    first = int(prompt_cols[0]) if len(prompt_cols) else inputs["prompt_mask"].size(1) - 1
    last = int(completion_cols[-1]) + 1 if len(completion_cols) else 1
    out = {}
    for key, value in inputs.items():
        if not torch.is_tensor(value) or value.dim() == 0:
            out[key] = value
            continue
        value = value[rows]
        if key in PROMPT_KEYS:
            value = value[:, first:]
        elif key in COMPLETION_KEYS and value.dim() == 2 and value.size(1) > 1:
            value = value[:, :last]
        out[key] = value
    return out


def informative_rows(trainer_class):
    """`trainer_class` (GRPOTrainer) whose loss runs the model only on the completions with a gradient."""

    class InformativeRows(trainer_class):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._rows_needed = why_rows_are_needed(self)
            if self._rows_needed:
                log.info("GRPO's loss runs on every completion (%s)", self._rows_needed)
            else:
                log.info("GRPO's loss runs on the completions whose advantage is not 0 (the others add nothing)")

        def _compute_loss(self, model, inputs):
            if self._rows_needed is None and self.model.training:
                rows = inputs["advantages"].size(0)
                inputs = informative_batch(inputs)
                # logged beside TRL's figures: the share of completions the forward and backward passes ran on
                self._metrics["train"]["loss_rows_fraction"].append(inputs["advantages"].size(0) / rows)
            return super()._compute_loss(model, inputs)

    InformativeRows.__name__ = trainer_class.__name__  # the logs and the stage's figures name TRL's trainer
    return InformativeRows
