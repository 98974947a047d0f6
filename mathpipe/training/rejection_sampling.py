"""Rejection sampling: N samples per training prompt, scored by the reward model and the verifier.

    result = run_rejection_sampling(cfg)
    result.samples   # every sample: text, extracted answer, verdict, reward
    result.best      # one SFT record per kept prompt (prepare's schema: messages + Alpaca columns)
    result.pairs_train, result.pairs_val   # chosen (the selected sample) vs rejected (the
                                           # lowest-reward incorrect samples, pairs_per_prompt of them)
    result.metrics   # pass@1, pass@N, reward-selected accuracy, AUC, prompts kept, samples/s

Selection rules (`selection.rule`): `verified_reward` picks the highest-reward sample among those
the verifier accepts; `reward` the highest-reward sample (no gold answer needed); `verifier` the
first accepted sample. `selection.min_reward` optionally drops a selected sample scored below it.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mathpipe import answers, prompts
from mathpipe.config import check, check_range
from mathpipe.data.prepare import pair_record, sft_record
from mathpipe.data.problems import read_problems
from mathpipe.errors import DataError
from mathpipe.generation import EngineSettings, GenerationSettings, make_generator
from mathpipe.models import read_origin, require_model_dir

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SelectionSettings:
    rule: Literal["verified_reward", "reward", "verifier"]
    min_reward: float | None  # a selected sample scored below this is dropped (null: no threshold)


@dataclass(kw_only=True)
class RejectionConfig:
    policy: str
    reward_model: str
    prompts_file: str  # rows with problem and answer (prepare's SFT records)
    metrics: str  # pass rates, selection and AUC figures, a JSON file kept in git
    max_prompts: int | None  # a seeded random subset of this many prompts (null: all)
    prompt_seed: int
    template: str
    out_dir: str
    pairs_per_prompt: int  # the selected sample against this many lowest-reward incorrect ones
    val_fraction: float  # share of prompts whose pairs are held out (pairs_val.jsonl)
    split_seed: int
    score_batch_size: int
    engine: EngineSettings
    generation: GenerationSettings
    selection: SelectionSettings

    def validate(self, prefix: str) -> None:
        if self.max_prompts is not None:
            check(self.max_prompts > 0, f"{prefix}.max_prompts", f"must be > 0 or null, got {self.max_prompts}")
        check(self.pairs_per_prompt > 0, f"{prefix}.pairs_per_prompt", f"must be > 0, got {self.pairs_per_prompt}")
        check_range(self.val_fraction, f"{prefix}.val_fraction", 0.0, 0.5)
        check(self.score_batch_size > 0, f"{prefix}.score_batch_size", f"must be > 0, got {self.score_batch_size}")
        check(self.generation.n >= 2, f"{prefix}.generation.n",
              f"rejection sampling needs at least 2 samples per prompt, got {self.generation.n}")
        prompts.instruction(self.template)


@dataclass
class RejectionResult:
    samples: list[dict]
    best: list[dict]
    pairs_train: list[dict]
    pairs_val: list[dict]
    metrics: dict


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counting half; None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    # Rank-sum (Mann-Whitney U) with average ranks for ties: O(n log n).
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def select(group: list[dict], rule: str, min_reward: float | None) -> dict | None:
    """The sample kept for one prompt, or None. An unfinished sample is never kept: its text
    teaches length, not reasoning."""
    if rule == "verified_reward":
        pick = max((s for s in group if s["correct"]), key=lambda s: s["reward"], default=None)
    elif rule == "reward":
        pick = max((s for s in group if s["unfinished"] is None), key=lambda s: s["reward"], default=None)
    else:
        pick = next((s for s in group if s["correct"]), None)
    if pick is not None and min_reward is not None and pick["reward"] < min_reward:
        return None
    return pick


def rejected_for(group: list[dict], chosen: dict, limit: int) -> list[dict]:
    """Up to `limit` finished incorrect samples with distinct texts, lowest reward first, none equal to
    the chosen one (a cut-off text against a finished one would teach length, not correctness)."""
    wrong, seen = [], {chosen["text"].strip()}
    finished_wrong = (s for s in group if not s["correct"] and s["unfinished"] is None)
    for s in sorted(finished_wrong, key=lambda s: s["reward"]):
        if s["text"].strip() not in seen:
            seen.add(s["text"].strip())
            wrong.append(s)
    return wrong[:limit]


def summarise(groups: list[list[dict]], kept: int, pairs: int) -> dict:
    samples = [s for g in groups for s in g]
    n_prompts = len(groups)
    within = [a for a in (roc_auc([s["reward"] for s in g], [s["correct"] for s in g]) for g in groups)
              if a is not None]
    top_reward = [max(g, key=lambda s: s["reward"]) for g in groups]
    return {
        "prompts": n_prompts,
        "samples": len(samples),
        "samples_per_prompt": len(samples) // n_prompts,
        "pass_at_1": sum(s["correct"] for s in samples) / len(samples),  # = accuracy of a random sample
        "pass_at_n": sum(any(s["correct"] for s in g) for g in groups) / n_prompts,
        "reward_selected_accuracy": sum(s["correct"] for s in top_reward) / n_prompts,
        "reward_auc": roc_auc([s["reward"] for s in samples], [s["correct"] for s in samples]),
        "reward_auc_within_prompt": sum(within) / len(within) if within else None,
        "prompts_with_mixed_verdicts": len(within),
        "answer_found_rate": sum(s["extracted"] is not None for s in samples) / len(samples),
        "truncated_rate": sum(s["unfinished"] is not None for s in samples) / len(samples),
        "mean_output_tokens": sum(s["num_tokens"] for s in samples) / len(samples),
        "prompts_kept": kept,
        "pairs": pairs,
    }


def sample(cfg: RejectionConfig, rows: list[dict],
           chat_template_kwargs: dict | None = None) -> tuple[list[list[dict]], dict]:
    """n completions per prompt, each with the answer checker's verdict; and the generation figures."""
    generator = make_generator(cfg.policy, cfg.engine)
    try:
        rendered = [prompts.render_prompt(generator.tokenizer, r["problem"], cfg.template, chat_template_kwargs)
                    for r in rows]
        start = time.perf_counter()
        outputs = generator.generate(rendered, cfg.generation)
        seconds = time.perf_counter() - start
        backend = generator.name
    finally:
        generator.close()  # vLLM holds most of the GPU: free it before the reward model loads
    groups = []
    for row, prompt, completions in zip(rows, rendered, outputs):
        group = []
        for j, c in enumerate(completions):
            extracted, unfinished = answers.final_answer(c.text, c.finish_reason, answers.opens_thinking(prompt))
            group.append({
                "id": row["id"], "sample": j, "problem": row["problem"], "gold": row["answer"], "text": c.text,
                "extracted": extracted,
                "correct": unfinished is None and answers.is_equivalent(extracted, row["answer"]),
                "num_tokens": c.num_tokens, "finish_reason": c.finish_reason, "unfinished": unfinished,
                "selected": False,
            })
        groups.append(group)
    samples = sum(len(g) for g in groups)
    tokens = sum(s["num_tokens"] for g in groups for s in g)
    return groups, {"backend": backend, "generation_seconds": round(seconds, 2),
                    "samples_per_second": round(samples / seconds, 2),
                    "output_tokens_per_second": round(tokens / seconds, 1)}


def score(cfg: RejectionConfig, samples: list[dict], chat_template_kwargs: dict | None = None) -> float:
    """Adds each sample's reward; returns the seconds it took."""
    from mathpipe.training.reward_model import RewardScorer  # transformers' model classes: import only when needed

    scorer = RewardScorer(cfg.reward_model, batch_size=cfg.score_batch_size, dtype=cfg.engine.dtype,
                          trust_remote_code=cfg.engine.trust_remote_code, chat_template_kwargs=chat_template_kwargs)
    start = time.perf_counter()
    # Scored as text with the reward model's own tokenizer and chat template: any tokenizer works.
    rewards = scorer.score([prompts.messages(s["problem"], cfg.template) for s in samples],
                           [s["text"] for s in samples])
    for s, r in zip(samples, rewards):
        s["reward"] = r
    return round(time.perf_counter() - start, 2)


def run_rejection_sampling(cfg: RejectionConfig, chat_template_kwargs: dict | None = None) -> RejectionResult:
    # Everything that can be wrong with the inputs fails here, before the engine starts.
    rows = read_problems(cfg.prompts_file, cfg.max_prompts, cfg.prompt_seed, purpose="sample from")
    require_model_dir(cfg.policy, "rejection_sampling.policy")
    require_model_dir(cfg.reward_model, "rejection_sampling.reward_model")

    groups, generation = sample(cfg, rows, chat_template_kwargs)
    flat = [s for g in groups for s in g]
    scoring_seconds = score(cfg, flat, chat_template_kwargs)

    # prepare held out its own validation problems, so the training prompts all hash to "train":
    # the held-out prompts here are a seeded random share instead.
    ids = sorted(r["id"] for r in rows)
    held_out = set(random.Random(cfg.split_seed).sample(ids, round(len(ids) * cfg.val_fraction)))
    best, pairs_train, pairs_val = [], [], []
    for group in groups:
        chosen = select(group, cfg.selection.rule, cfg.selection.min_reward)
        if chosen is None:
            continue
        chosen["selected"] = True
        best.append({**sft_record(chosen["id"], "rejection_sampling", chosen["problem"], chosen["gold"],
                                  chosen["text"], cfg.template), "reward": chosen["reward"]})
        for rejected in rejected_for(group, chosen, cfg.pairs_per_prompt):
            pair = {**pair_record(chosen["id"], chosen["problem"], chosen["gold"], chosen["text"],
                                  rejected["text"], cfg.template),
                    "chosen_reward": chosen["reward"], "rejected_reward": rejected["reward"]}
            (pairs_val if chosen["id"] in held_out else pairs_train).append(pair)
    if not pairs_train:
        raise DataError(
            f"rejection sampling kept {len(best)} of {len(rows)} prompts and built no training pair "
            f"(rule {cfg.selection.rule}, min_reward {cfg.selection.min_reward}): every prompt needs a selected "
            "sample and an incorrect one; raise generation.n or temperature, or lower selection.min_reward"
        )

    metrics = summarise(groups, kept=len(best), pairs=len(pairs_train) + len(pairs_val))
    metrics.update(pairs_train=len(pairs_train), pairs_val=len(pairs_val), **generation,
                   scoring_seconds=scoring_seconds)
    metrics["config"] = {
        "policy": read_origin(cfg.policy), "reward_model": read_origin(cfg.reward_model),
        "prompts_file": cfg.prompts_file, "selection_rule": cfg.selection.rule, "min_reward": cfg.selection.min_reward,
        "n": cfg.generation.n, "temperature": cfg.generation.temperature, "top_p": cfg.generation.top_p,
        "max_new_tokens": cfg.generation.max_new_tokens, "seed": cfg.generation.seed, "template": cfg.template,
        "chat_template_kwargs": chat_template_kwargs or {},
    }
    log.info("pass@1 %.3f, pass@%d %.3f, reward-selected %.3f, AUC %s; %d/%d prompts kept, %d pairs",
             metrics["pass_at_1"], metrics["samples_per_prompt"], metrics["pass_at_n"],
             metrics["reward_selected_accuracy"], metrics["reward_auc"], len(best), len(rows), metrics["pairs"])
    return RejectionResult(flat, best, pairs_train, pairs_val, metrics)


def write_outputs(result: RejectionResult, out_dir: str | Path) -> None:
    from mathpipe.io import atomic_dir, write_jsonl

    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "samples.jsonl", result.samples)
        write_jsonl(tmp / "best.jsonl", result.best)
        write_jsonl(tmp / "pairs_train.jsonl", result.pairs_train)
        write_jsonl(tmp / "pairs_val.jsonl", result.pairs_val)
