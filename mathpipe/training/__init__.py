"""Training: the trainer skeleton (trainer.py) and one module per training stage (base_model, sft,
reward_model, rejection_sampling, dpo, grpo with its rewards in grpo_rewards, merge), with the
pieces they share (trl_args, launch) and the tiny model the default builds (tiny_model, pretrain)."""
