"""Where a GRPO step's time goes: generation, reward, log-probs, forward and backward, optimizer, TRL.

    make bench-grpo                                   # = python -m benchmarks.grpo_step: params.yaml's grpo, 16 steps
    python -m benchmarks.grpo_step --steps 8 -S grpo.train.max_completion_length=96 --out /tmp/g.json

Runs the grpo stage's own code (mathpipe.training.grpo.run_grpo) on its starting model for a few
steps in a scratch folder, with timers around GRPOTrainer's parts, twice, one after the other: as
the stage trains (the loss on the completions with a gradient, mathpipe.training.grpo_batch) and
with TRL's loss over the whole batch. -S overrides a key of the grpo section as `dvc exp run -S`
does (the value is YAML). Per optimizer step, the median over the steps after the first (which pays
for warm-up) of:

- generation: the policy writing the completions (`_generate_single_turn`, transformers or vLLM);
- reward: the reward functions (`_calculate_rewards`);
- logprobs_no_grad: old and reference log-probs, when the recipe needs them (a forward pass without grad);
- forward: the loss's forward pass (`compute_loss`, which holds the policy's log-probs);
- backward: `accelerator.backward`;
- optimizer: gradient clipping and the optimizer's step;
- checkpoint: saving a checkpoint (every save_steps);
- trl_other: what is left of the step (tokenising, padding, advantages, metrics, logging, callbacks).

Writes the table to --out (metrics/bench/grpo_step.json) and prints it.
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from collections import defaultdict

import yaml

from mathpipe.cli import run_stage
from mathpipe.config import from_dict, load_params
from mathpipe.errors import ConfigError
from mathpipe.io import write_json

log = logging.getLogger("benchmarks.grpo_step")
PARTS = ("generation", "reward", "logprobs_no_grad", "forward", "backward", "optimizer", "checkpoint")


class StepTimer:
    """Seconds spent in each part, bucketed by the optimizer step in which they were spent."""

    def __init__(self):
        self.current = 0
        self.spent: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.step_started: dict[int, float] = {}
        self.step_ended: dict[int, float] = {}

    def add(self, part: str, seconds: float) -> None:
        self.spent[self.current][part] += seconds

    def wrap(self, owner, name: str, part, restore: list) -> None:
        """Time every call of owner.name under `part` (a name, or a function of no argument naming one)."""
        original = getattr(owner, name)
        restore.append((owner, name, owner.__dict__.get(name)))  # None: inherited, deleted again after

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(part() if callable(part) else part, time.perf_counter() - started)

        setattr(owner, name, timed)

    def table(self) -> dict:
        """Median seconds per part over the steps after the first, and what the step spent elsewhere."""
        steps = sorted(s for s in self.step_ended if s in self.step_started and s > 0)
        if not steps:
            raise SystemExit("no step after the first was timed: pass --steps 2 or more")
        totals = [self.step_ended[s] - self.step_started[s] for s in steps]
        rows = {part: [self.spent[s].get(part, 0.0) for s in steps] for part in PARTS}
        rows["trl_other"] = [t - sum(self.spent[s].get(p, 0.0) for p in PARTS) for s, t in zip(steps, totals)]
        median_total = statistics.median(totals)
        return {
            "steps_timed": len(steps),
            "step_seconds_median": round(median_total, 3),
            "step_seconds_mean": round(statistics.fmean(totals), 3),
            "parts": {part: {"median_seconds": round(statistics.median(v), 3),
                             "mean_seconds": round(statistics.fmean(v), 3),
                             "share_of_mean_step": round(statistics.fmean(v) / statistics.fmean(totals), 3)}
                      for part, v in rows.items()},
        }


def instrument(timer: StepTimer, restore: list):
    """Patch GRPOTrainer and accelerate's Accelerator with the timers; returns the step callback."""
    import torch
    from accelerate import Accelerator
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    timer.wrap(GRPOTrainer, "_generate_single_turn", "generation", restore)
    timer.wrap(GRPOTrainer, "_calculate_rewards", "reward", restore)
    # Called without grad for old/reference log-probs; with grad inside compute_loss (timed as forward).
    timer.wrap(GRPOTrainer, "_get_per_token_logps_and_entropies",
               lambda: "ignored" if torch.is_grad_enabled() else "logprobs_no_grad", restore)
    timer.wrap(GRPOTrainer, "compute_loss", "forward", restore)
    timer.wrap(GRPOTrainer, "_save_checkpoint", "checkpoint", restore)
    timer.wrap(GRPOTrainer, "_clip_grad_norm", "optimizer", restore)
    timer.wrap(Accelerator, "backward", "backward", restore)

    class StepMarks(TrainerCallback):
        optimizer_started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            timer.current = state.global_step
            timer.step_started.setdefault(state.global_step, time.perf_counter())

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.optimizer_started = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            timer.add("optimizer", time.perf_counter() - self.optimizer_started)

        def on_step_end(self, args, state, control, **kwargs):
            # global_step has moved on: the step that just ended is the one before it. Logging and
            # saving run after on_step_end, so the step is closed when the next one begins.
            timer.step_ended[state.global_step - 1] = time.perf_counter()

        def on_log(self, args, state, control, **kwargs):
            self._close(state)

        def on_save(self, args, state, control, **kwargs):
            self._close(state)

        def _close(self, state):
            if state.global_step - 1 in timer.step_ended:
                timer.step_ended[state.global_step - 1] = time.perf_counter()

    return StepMarks()


def apply_overrides(section: dict, overrides: list[str]) -> dict:
    """`grpo.a.b=value` -> section["a"]["b"] = yaml(value), on a copy, through the profiles' own merge
    (a key the section does not have is an error, except in its TRL and PEFT argument mappings)."""
    from mathpipe.tools.profile import merge

    nested: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.split(".")
        if not sep or parts[0] != "grpo" or len(parts) < 2:
            raise ConfigError(f"-S {item!r}: expected grpo.<key>=<value>")
        target = nested
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(value)
    return merge(section, nested, "grpo.")


def profile(params: dict, steps: int, overrides: list[str], whole_batch: bool = False) -> dict:
    """whole_batch: TRL's GRPOTrainer as it is, its loss over every completion."""
    from mathpipe.training import grpo
    from mathpipe.training.grpo import GRPOStageConfig, run_grpo

    raw = apply_overrides(params["grpo"], overrides)
    with tempfile.TemporaryDirectory(prefix="grpo-step-") as work:
        raw = {**raw, "out_dir": f"{work}/adapter", "checkpoint_dir": f"{work}/checkpoints",
               "live_dir": f"{work}/live", "metrics": f"{work}/metrics.json",
               "train": {**raw["train"], "max_steps": steps}}
        cfg = from_dict(GRPOStageConfig, raw, "grpo")
        timer, restore = StepTimer(), []
        try:
            marks = instrument(timer, restore)
            if whole_batch:
                restore.append((grpo, "informative_rows", grpo.informative_rows))
                grpo.informative_rows = lambda trainer_class: trainer_class
            started = time.perf_counter()
            summary = run_grpo(cfg, chat_template_kwargs=params["prompt"]["chat_template_kwargs"], callbacks=[marks])
            wall = time.perf_counter() - started
        finally:
            for owner, name, original in reversed(restore):
                if original is None:
                    delattr(owner, name)
                else:
                    setattr(owner, name, original)
    return {
        "loss_on": "every completion" if whole_batch else "completions with a gradient",
        "overrides": overrides,
        "steps": steps,
        "method": summary["method"],
        "completions_per_step": summary["global_batch_size"],
        "max_completion_length": summary["max_completion_length"],
        "completion_length_mean": summary.get("completion_length_mean"),
        "truncated_fraction": summary.get("truncated_fraction"),
        "uniform_group_fraction": summary.get("uniform_group_fraction"),
        "loss_rows_fraction": summary.get("loss_rows_fraction"),  # None: the loss ran on every completion
        "train_seconds": summary["train_seconds"],
        "run_seconds": round(wall, 1),
        **timer.table(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpo_step", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps to run (the first is not counted)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        help="grpo.<key>=<value>, as dvc exp run -S (repeatable)")
    parser.add_argument("--out", default="metrics/bench/grpo_step.json")
    args = parser.parse_args()
    params = load_params()
    runs = {"stage": profile(params, args.steps, args.overrides),
            "whole_batch": profile(params, args.steps, args.overrides, whole_batch=True)}
    ratio = runs["stage"]["step_seconds_median"] / runs["whole_batch"]["step_seconds_median"]
    write_json(args.out, {**runs, "step_median_ratio": round(ratio, 3)})
    stage = runs["stage"]
    print(f"{stage['completions_per_step']} completions a step ({stage['method']}), {stage['steps_timed']} steps "
          f"timed; the loss on the completions with a gradient (stage) against every completion (whole_batch)")
    print(f"{'part':<18} {'stage s':>9} {'share':>6} {'whole s':>9} {'share':>6}   (medians per step)")
    for part in stage["parts"]:
        a, b = stage["parts"][part], runs["whole_batch"]["parts"][part]
        print(f"{part:<18} {a['median_seconds']:>9.3f} {a['share_of_mean_step']:>6.1%} "
              f"{b['median_seconds']:>9.3f} {b['share_of_mean_step']:>6.1%}")
    print(f"{'step':<18} {stage['step_seconds_median']:>9.3f} {'':>6} "
          f"{runs['whole_batch']['step_seconds_median']:>9.3f}   ratio {ratio:.2f}; loss on "
          f"{stage['loss_rows_fraction']:.0%} of the completions -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
