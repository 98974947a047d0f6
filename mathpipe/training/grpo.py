"""Group relative policy optimisation with TRL's GRPOTrainer: online RL whose reward is the answer checker.

    cfg = from_dict(GRPOStageConfig, params["grpo"], "grpo")
    summary = run_grpo(cfg)    # writes cfg.out_dir (the adapter), returns training figures

Each step samples `num_generations` completions per prompt from the policy, scores them with the
rewards of mathpipe.training.grpo_rewards (accuracy against the gold answer, format, overlong shaping) and moves the
policy towards the completions that beat their group's mean. `grpo.train` holds GRPOConfig's own
arguments, verbatim (mathpipe.training.trl_args): a TRL user's `num_generations`, `beta`, `loss_type`,
`scale_rewards`, `use_vllm`, ... work as TRL documents them. With LoRA and beta > 0, the reference
policy is the same network with the adapter switched off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mathpipe import answers, prompts
from mathpipe.config import check
from mathpipe.data.problems import read_problems
from mathpipe.errors import ConfigError
from mathpipe.training import trainer
from mathpipe.training.grpo_batch import informative_rows
from mathpipe.training.grpo_rewards import RewardSettings, reward_functions

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class GRPOStageConfig(trainer.TrainerStage):
    model: str
    prompts_file: str  # problems with their gold answers
    max_prompts: int | None  # a seeded random subset (null: every prompt)
    prompt_seed: int
    template: str
    out_dir: str
    checkpoint_dir: str
    live_dir: str
    rewards: RewardSettings

    TRL_CONFIG = "GRPOConfig"
    FROM_PARAMS = ("reward_weights", "chat_template_kwargs")  # from grpo.rewards and the prompt section

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if self.max_prompts is not None:
            check(self.max_prompts > 0, f"{prefix}.max_prompts", f"must be > 0 or null, got {self.max_prompts}")
        prompts.instruction(self.template)
        for name in self.FROM_PARAMS:
            check(name not in self.train, f"{prefix}.train.{name}", "set by the pipeline; remove it from params.yaml")
        if "num_generations" in self.train:
            group = self.train["num_generations"]
            check(isinstance(group, int) and group >= 2, f"{prefix}.train.num_generations",
                  f"must be an integer >= 2 (GRPO compares completions within a group), got {group!r}")
        if "beta" in self.train:
            beta = self.train["beta"]
            check(isinstance(beta, (int, float)) and beta >= 0, f"{prefix}.train.beta",
                  f"the KL coefficient must be >= 0, got {beta!r}")


def load_prompts(cfg: GRPOStageConfig) -> list[dict]:
    """TRL's conversational prompt rows, each with its gold `answer` (the accuracy reward reads it)."""
    rows = read_problems(cfg.prompts_file, cfg.max_prompts, cfg.prompt_seed, purpose="train on")
    return [{"prompt": prompts.messages(r["problem"], cfg.template), "answer": r["answer"], "id": r["id"]}
            for r in rows]


def check_completion_length(model_dir: Path, max_completion_length: int, prefix: str, trust_remote_code: bool) -> None:
    """Before the weights load: a completion budget the model cannot hold is a parameter error."""
    from transformers import AutoConfig

    limit = getattr(AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code),
                    "max_position_embeddings", None)
    if limit is not None and max_completion_length >= limit:
        raise ConfigError(f"{prefix}.train.max_completion_length: {max_completion_length} tokens leave no room for "
                          f"the prompt in {model_dir}'s {limit} positions (max_position_embeddings)")


def grpo_args(cfg: GRPOStageConfig, device: str, chat_template_kwargs: dict | None, prefix: str):
    """TRL's GRPOConfig for this stage; the reward weights come from grpo.rewards."""
    return cfg.arguments(prefix, device, has_eval=False,
                         reward_weights=[float(w) for w in cfg.rewards.weights.values()],
                         chat_template_kwargs=dict(chat_template_kwargs or {}) or None)


def group_statistics(log_history: list[dict]) -> dict:
    """Training figures from GRPOTrainer's logs: first and last reward, the share of groups whose
    completions all got the same reward (they teach nothing), completion length."""
    logs = [h for h in log_history if "reward" in h]
    if not logs:
        return {}

    def mean(key: str):
        values = [h[key] for h in logs if key in h]
        return sum(values) / len(values) if values else None

    return {
        "reward_first": logs[0]["reward"],
        "reward_last": logs[-1]["reward"],
        "reward_mean": mean("reward"),
        "uniform_group_fraction": mean("frac_reward_zero_std"),
        "completion_length_mean": mean("completions/mean_length"),
        "truncated_fraction": mean("completions/clipped_ratio"),
        "loss_rows_fraction": mean("loss_rows_fraction"),  # completions the loss ran on (mathpipe.training.grpo_batch)
    }


def recorded(func, verdicts: list):
    """`func` that also appends one row per completion to `verdicts`: its prompt `id`, gold `answer`,
    `completion` and `completion_ids` as TRL passed them, and the reward under the function's name."""
    def reward(id=(), answer=(), completions=(), completion_ids=None, **batch):
        values = func(id=id, answer=answer, completions=completions, completion_ids=completion_ids, **batch)
        ids = completion_ids if completion_ids is not None else [None] * len(values)
        verdicts.extend({"id": str(i), "answer": a, "completion": c, "completion_ids": t, func.__name__: v}
                        for i, a, c, t, v in zip(id, answer, completions, ids, values))
        return values

    reward.__name__ = func.__name__
    return reward


def run_grpo(cfg: GRPOStageConfig, prefix: str = "grpo", chat_template_kwargs: dict | None = None,
             callbacks: list | None = None, verdicts: list | None = None) -> dict:
    """verdicts: when a list, every completion's row (`recorded`) is appended to it, one per reward."""
    from trl import GRPOTrainer

    from mathpipe.models import load_tokenizer, require_model_dir
    from mathpipe.training.weight_sync import drift_free

    model_dir = require_model_dir(cfg.model, f"{prefix}.model")
    rows = load_prompts(cfg)
    tokenizer = load_tokenizer(model_dir, trust_remote_code=cfg.trust_remote_code, padding_side="left")
    device = trainer.training_device()
    end_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    thinking_opened = answers.opens_thinking(prompts.render_prompt(tokenizer, "?", cfg.template, chat_template_kwargs))
    args = grpo_args(cfg, device, chat_template_kwargs, prefix)
    check_completion_length(model_dir, args.max_completion_length, prefix, cfg.trust_remote_code)
    funcs, _ = reward_functions(cfg.rewards, args.max_completion_length, end_ids, thinking_opened)
    if verdicts is not None:
        funcs = [recorded(f, verdicts) for f in funcs]

    # The template kwargs reach GRPOTrainer through args (chat_template_kwargs), not per row.
    run = trainer.run_trainer(
        cfg, prefix, drift_free(informative_rows(GRPOTrainer)), args, trainer.policy_model(cfg, device), tokenizer,
        rows,
        fingerprint_parts=(rows, chat_template_kwargs or {}),
        code_files=(__file__, *(Path(__file__).with_name(f) for f in ("grpo_rewards.py", "grpo_batch.py"))),
        callbacks=callbacks or (),
        reward_funcs=funcs,
    )
    return {
        **run.summary,
        "prompts": len(rows),
        "num_generations": args.num_generations,
        "prompts_per_step": run.summary["global_batch_size"] // args.num_generations,
        "max_completion_length": args.max_completion_length,
        "beta": args.beta,
        "loss_type": args.loss_type,
        "rewards": dict(cfg.rewards.weights),
        **group_statistics(run.trainer.state.log_history),
    }
