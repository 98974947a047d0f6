"""prepare: raw inputs -> SFT records, preference pairs and evaluation sets.

    python -m stages.prepare        # reads the `prepare` section of params.yaml

Outputs (under `out_dir`):
    sft_train.jsonl, sft_val.jsonl      chat `messages` + Alpaca `instruction | input | output`
    pairs_train.jsonl, pairs_val.jsonl  {"prompt", "chosen", "rejected"} in TRL's conversational form
    eval/gsm8k.jsonl, eval/cmath.jsonl  {"id", "question", "gold", "reference"}

OpenR1 rows go through the filters in a fixed order, and the number of rows left after each one is
reported. The train/validation split is a hash of the problem text, so it does not depend on input
order or on which other rows survive the filters.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from mathpipe import prompts
from mathpipe.answers import extract_gold, parses_as_number
from mathpipe.config import check, check_positive, check_range
from mathpipe.data import readers
from mathpipe.data.sample import SAMPLE_DIR
from mathpipe.errors import DataError
from mathpipe.hub import check_revision, download
from mathpipe.io import atomic_dir, write_jsonl

log = logging.getLogger(__name__)



@dataclass
class Filters:
    min_correctness_count: int = 1
    require_math_verify: bool = True  # keep only traces that Math-Verify judged correct
    require_complete: bool = True  # ... whose reasoning is complete (closed </think>)
    require_finish_stop: bool = True  # ... that finished with "stop" (a null finish_reasons passes)
    max_tokens: int = 512  # prompt + response, in tokens of the base model's tokenizer

    def validate(self, prefix: str) -> None:
        check(self.min_correctness_count >= 0, f"{prefix}.min_correctness_count", "must be >= 0")
        check_positive(self.max_tokens, f"{prefix}.max_tokens")


@dataclass
class LocalFiles:
    """Paths or globs relative to `raw_dir`; null leaves a source out."""

    openr1: list[str] | str | None = "openr1/*.parquet"
    gsm8k_train: str | None = "gsm8k/train.jsonl"
    gsm8k_test: str | None = "gsm8k/test.jsonl"
    cmath_test: str | None = "cmath/test.jsonl"


@dataclass
class HubFiles:
    """Files of a Hugging Face dataset repository at a pinned revision (a commit hash)."""

    repo: str
    revision: str
    files: str  # glob inside the repository, e.g. "data/train-*.parquet"

    def validate(self, prefix: str) -> None:
        check_revision(self.revision, f"{prefix}.revision", "data set")


@dataclass
class HubSources:
    openr1: HubFiles | None = None
    gsm8k_train: HubFiles | None = None
    gsm8k_test: HubFiles | None = None
    cmath_test: HubFiles | None = None


@dataclass
class PrepareConfig:
    source: Literal["sample", "local", "hub"] = "sample"
    raw_dir: str = SAMPLE_DIR
    files: LocalFiles = field(default_factory=LocalFiles)
    hub: HubSources = field(default_factory=HubSources)
    out_dir: str = "data/prepared"
    tokenizer: str = "models/base"
    sft_sources: list[Literal["openr1", "gsm8k"]] = field(default_factory=lambda: ["openr1"])
    trace: Literal["generation", "solution"] = "generation"
    template: str = prompts.DEFAULT_TEMPLATE
    filters: Filters = field(default_factory=Filters)
    pairs_per_problem: int = 1  # preference pairs per problem: each a different incorrect trace
    val_fraction: float = 0.05
    max_train_rows: int | None = None
    split_seed: int = 0
    batch_size: int = 512

    def validate(self, prefix: str) -> None:
        check(bool(self.sft_sources), f"{prefix}.sft_sources", "must name at least one source")
        check_range(self.val_fraction, f"{prefix}.val_fraction", 0.0, 0.5)
        check_positive(self.batch_size, f"{prefix}.batch_size")
        check_positive(self.pairs_per_problem, f"{prefix}.pairs_per_problem")
        if self.max_train_rows is not None:
            check_positive(self.max_train_rows, f"{prefix}.max_train_rows")
        if self.source == "sample":
            check(
                self.raw_dir == SAMPLE_DIR,
                f"{prefix}.raw_dir",
                f"with source 'sample' the inputs are the sample_data stage's output {SAMPLE_DIR}; "
                "set source: local to read another folder",
            )
        prompts.instruction(self.template)  # unknown template -> ConfigError


@dataclass
class Inputs:
    """Resolved input files per source."""

    openr1: list[Path]
    gsm8k_train: list[Path]
    gsm8k_test: list[Path]
    cmath_test: list[Path]


def resolve_inputs(cfg: PrepareConfig) -> Inputs:
    """Find every input file before any work, so a missing one fails first."""
    needed = {"openr1": "openr1" in cfg.sft_sources, "gsm8k_train": "gsm8k" in cfg.sft_sources}
    resolved = {}
    for name in ("openr1", "gsm8k_train", "gsm8k_test", "cmath_test"):
        if cfg.source == "hub":
            spec = getattr(cfg.hub, name)
            paths = download_files(spec, f"prepare.hub.{name}") if spec else []
        else:
            pattern = getattr(cfg.files, name)
            paths = readers.expand_paths(pattern, Path(cfg.raw_dir)) if pattern else []
        if needed.get(name, False) and not paths:
            raise DataError(f"prepare.files.{name} (or prepare.hub.{name}) is needed by sft_sources")
        resolved[name] = paths
    return Inputs(**resolved)


def download_files(spec: HubFiles, key: str) -> list[Path]:
    """The files of a pinned Hub data set that match spec.files, downloaded (or from the cache)."""
    local = download(spec.repo, spec.revision, key, repo_type="dataset", allow_patterns=[spec.files])
    return readers.expand_paths(spec.files, local)


# --- building records ---------------------------------------------------------------------------


def normalise_problem(text: str) -> str:
    return " ".join(text.split())


def is_validation(problem: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}\0{normalise_problem(problem)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def sft_record(rid: str, source: str, problem: str, answer: str, output: str, template: str) -> dict:
    user = prompts.user_message(problem, template)
    return {
        "id": rid,
        "source": source,
        "problem": problem,
        "answer": answer,
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}],
        "instruction": prompts.instruction(template),
        "input": problem,
        "output": output,
    }


def pair_record(rid: str, problem: str, answer: str, chosen: str, rejected: str, template: str) -> dict:
    return {
        "id": rid,
        "answer": answer,
        "prompt": prompts.messages(problem, template),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _flag(values: list | None, i: int):
    """values[i] for nullable, possibly short per-generation lists; None when unknown."""
    return values[i] if values is not None and i < len(values) else None


def _finished(row: dict, i: int) -> bool:
    return _flag(row["finish_reasons"], i) in (None, "stop")


def _complete(row: dict, i: int) -> bool:
    return _flag(row["is_reasoning_complete"], i) is not False and prompts.THINK_CLOSE in row["generations"][i]


def filter_openr1_row(row: dict, f: Filters, counts: Counter) -> list[int] | None:
    """Indices of the usable correct generations, or None if the row is dropped (counted by reason)."""
    if (row["correctness_count"] or 0) < f.min_correctness_count:
        counts["dropped_min_correctness_count"] += 1
        return None
    usable = list(range(len(row["generations"] or [])))
    steps = (
        ("math_verify", f.require_math_verify, lambda i: _flag(row["correctness_math_verify"], i) is True),
        ("complete", f.require_complete, lambda i: _complete(row, i)),
        ("finish_stop", f.require_finish_stop, lambda i: _finished(row, i)),
    )
    for name, enabled, keep in steps:
        if enabled:
            usable = [i for i in usable if keep(i)]
            if not usable:
                counts[f"dropped_{name}"] += 1
                return None
    return usable


def _rejected_traces(row: dict) -> list[str]:
    """The incorrect but complete, finished generations of the same problem, in their order."""
    return [text for i, text in enumerate(row["generations"] or [])
            if _flag(row["correctness_math_verify"], i) is False and _complete(row, i) and _finished(row, i)]


class TokenCounter:
    """Token length of a chat conversation rendered with the base model's chat template."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, conversations: list[list[dict]]) -> list[int]:
        if not conversations:  # a fast tokenizer fails on an empty batch (a batch without pairs)
            return []
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]


def _batched(rows: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Collector:
    """Accumulates kept records by split, applying the length filter and the train-row cap."""

    def __init__(self, cfg: PrepareConfig, tokenizer):
        self.cfg = cfg
        self.count_tokens = TokenCounter(tokenizer)
        self.sft: dict[str, list[dict]] = {"train": [], "val": []}
        self.pairs: dict[str, list[dict]] = {"train": [], "val": []}
        self.pair_counts: Counter = Counter()

    def full(self) -> bool:
        cap = self.cfg.max_train_rows
        return cap is not None and len(self.sft["train"]) >= cap

    def add(self, candidates: list[tuple[dict, list[dict]]], counts: Counter) -> None:
        """candidates: (SFT record, its preference pairs) of one batch of source rows."""
        if not candidates:
            return
        limit = self.cfg.filters.max_tokens
        lengths = self.count_tokens([record["messages"] for record, _ in candidates])
        all_pairs = [pair for _, pairs in candidates for pair in pairs]
        chosen = iter(self.count_tokens([p["prompt"] + p["chosen"] for p in all_pairs]))
        rejected = iter(self.count_tokens([p["prompt"] + p["rejected"] for p in all_pairs]))
        for (record, pairs), length in zip(candidates, lengths):
            pair_lengths = [max(next(chosen), next(rejected)) for _ in pairs]
            if length > limit:
                counts["dropped_max_tokens"] += 1
                continue
            split = "val" if is_validation(record["problem"], self.cfg.val_fraction, self.cfg.split_seed) else "train"
            if split == "train" and self.full():
                continue
            self.sft[split].append(record)
            for pair, pair_length in zip(pairs, pair_lengths):
                self.pair_counts["candidates"] += 1
                if pair_length > limit:
                    self.pair_counts["dropped_max_tokens"] += 1
                else:
                    self.pair_counts["kept"] += 1
                    self.pairs[split].append(pair)


def run_prepare(cfg: PrepareConfig, tokenizer, inputs: Inputs) -> dict:
    """Write all outputs of prepare into cfg.out_dir (atomically) and return the counts."""
    # The benchmarks first: they are small, and a bad one should stop the stage before the shards.
    eval_sets = {"gsm8k": eval_rows("gsm8k", inputs.gsm8k_test), "cmath": eval_rows("cmath", inputs.cmath_test)}
    kept = _Collector(cfg, tokenizer)
    seen: set[str] = set()
    counts: dict[str, Counter] = {"openr1": Counter(), "gsm8k_train": Counter()}

    def first_time(problem: str, c: Counter) -> bool:
        key = normalise_problem(problem)
        if key in seen:
            c["dropped_duplicate"] += 1
            return False
        seen.add(key)
        return True

    if "openr1" in cfg.sft_sources:
        c = counts["openr1"]
        rows = readers.iter_openr1(inputs.openr1, batch_size=cfg.batch_size)
        for batch in tqdm(_batched(rows, cfg.batch_size), desc="prepare openr1", unit="batch"):
            candidates = []
            for row in batch:
                c["read"] += 1
                if not (row["problem"] or "").strip():
                    c["dropped_empty_problem"] += 1
                    continue
                if not first_time(row["problem"], c):
                    continue
                usable = filter_openr1_row(row, cfg.filters, c)
                if usable is not None:
                    candidates.append(openr1_records(row, usable, cfg))
            kept.add(candidates, c)
            if kept.full():
                break

    if "gsm8k" in cfg.sft_sources and not kept.full():
        c = counts["gsm8k_train"]
        candidates = []
        for i, row in enumerate(readers.iter_gsm8k(inputs.gsm8k_train)):
            c["read"] += 1
            if first_time(row["question"], c):
                reasoning, answer = gsm8k_reasoning(row["answer"])
                output = prompts.response(reasoning, answer)
                record = sft_record(f"gsm8k-train-{i}", "gsm8k", row["question"], answer, output, cfg.template)
                candidates.append((record, []))
        for chunk in _batched(iter(candidates), cfg.batch_size):
            kept.add(chunk, c)

    summary = {name: _remaining(c) for name, c in counts.items() if c["read"]}
    summary["pairs"] = {k: kept.pair_counts[k] for k in ("candidates", "dropped_max_tokens", "kept")}
    if not kept.sft["train"]:
        raise DataError(
            f"no SFT training rows left after the filters (counts: {summary}); "
            "loosen prepare.filters or check the inputs"
        )

    with atomic_dir(cfg.out_dir) as out:
        for split in ("train", "val"):
            write_jsonl(out / f"sft_{split}.jsonl", kept.sft[split])
            write_jsonl(out / f"pairs_{split}.jsonl", kept.pairs[split])
        (out / "eval").mkdir()
        for name, rows in eval_sets.items():
            write_jsonl(out / "eval" / f"{name}.jsonl", rows)

    summary["sft"] = {k: len(v) for k, v in kept.sft.items()}
    summary["pairs"].update({k: len(v) for k, v in kept.pairs.items()})
    summary["eval"] = {k: len(v) for k, v in eval_sets.items()}
    return summary


def openr1_records(row: dict, usable: list[int], cfg: PrepareConfig) -> tuple[dict, list[dict]]:
    """The SFT record of a kept OpenR1 row, and its preference pairs: up to cfg.pairs_per_problem
    incorrect traces, each against a correct one (the usable correct traces taken in turn)."""
    answer = row["answer"] or ""
    trace = row["generations"][usable[0]]
    if cfg.trace == "generation":
        output = trace
    else:
        output = prompts.response(row["solution"] or "", answer)
    record = sft_record(row["uuid"], "openr1", row["problem"], answer, output, cfg.template)
    pairs = []
    for k, rejected in enumerate(_rejected_traces(row)[: cfg.pairs_per_problem]):
        chosen = row["generations"][usable[k % len(usable)]]
        rid = row["uuid"] if k == 0 else f"{row['uuid']}#{k}"  # the first keeps the problem's id
        pairs.append(pair_record(rid, row["problem"], answer, chosen, rejected, cfg.template))
    return record, pairs


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def gsm8k_reasoning(answer: str) -> tuple[str, str]:
    """Split a GSM8K solution into its reasoning (calculator annotations removed) and final answer."""
    body, _, final = answer.rpartition("####")
    return _CALCULATOR.sub("", body).strip(), final.strip()


EVAL_READERS = {"gsm8k": (readers.iter_gsm8k, "answer"), "cmath": (readers.iter_cmath, "golden")}


def eval_rows(benchmark: str, paths: list[Path]) -> list[dict]:
    """A benchmark's questions with their final answers, checked like training files: a file with no
    question, or a gold answer that is not a number (no prediction could ever match it), is an error
    naming the file and row."""
    read, field = EVAL_READERS[benchmark]
    rows = []
    for path in paths:
        before = len(rows)
        for i, r in enumerate(read([path])):
            gold = extract_gold(r[field], benchmark)
            if not parses_as_number(gold):
                raise DataError(f"{path}: row {i + 1}: gold answer {gold!r} is not a number, so no prediction "
                                f"could ever match it")
            rows.append({"id": f"{benchmark}-test-{len(rows)}", "question": r["question"], "gold": gold,
                         "reference": r[field]})
        if len(rows) == before:
            raise DataError(f"{path}: no questions (the file is empty): a benchmark of 0 questions measures nothing")
    return rows


FILTER_ORDER = ("empty_problem", "duplicate", "min_correctness_count", "math_verify", "complete", "finish_stop",
                "max_tokens")


def _remaining(c: Counter) -> dict[str, int]:
    """Rows left after each filter, in the order they are applied, from the drop counts."""
    left = c["read"]
    out = {"read": left}
    for name in FILTER_ORDER:
        left -= c[f"dropped_{name}"]
        out[f"after_{name}"] = left
    return out
