"""prepare: raw inputs -> SFT records, preference pairs and evaluation sets.

    python -m stages.prepare        # reads the `prepare` section of params.yaml

Outputs (under `out_dir`):
    sft_train.jsonl, sft_val.jsonl      chat `messages` + Alpaca `instruction | input | output`
    pairs_train.jsonl, pairs_val.jsonl  {"prompt", "chosen", "rejected"} in TRL's conversational form
    eval/gsm8k.jsonl, eval/cmath.jsonl, eval/math.jsonl   {"id", "question", "gold", "reference"}

OpenR1 rows go through the filters in a fixed order, and the number of rows left after each one is
reported: the row filters (a trace judged correct by `filters.correct_by`, complete, finished), the
length filter (the shortest correct trace that fits `max_tokens` is the target), then
de-duplication, so that a copy dropped by a filter does not hide a usable one.
The train/validation split is a hash of the problem text, so it does not depend on input
order or on which other rows survive the filters.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from mathpipe import prompts
from mathpipe.answers import extract_gold, gold_is_checkable
from mathpipe.config import check, check_positive, check_range
from mathpipe.data import readers
from mathpipe.data.decontaminate import BenchmarkIndex
from mathpipe.data.sample_data import SAMPLE_DIR
from mathpipe.errors import DataError
from mathpipe.hub import check_revision, download
from mathpipe.io import atomic_dir, write_jsonl

log = logging.getLogger(__name__)



@dataclass(kw_only=True)
class Filters:
    min_correctness_count: int
    # Which judges must call a trace correct: any (Math-Verify or the Llama judge, OpenR1's own rule:
    # the judge recovers correct traces Math-Verify failed to parse) | math_verify | llama | all (every
    # judge that gave a verdict) | none (no check). A rejected trace is always wrong by every judge.
    correct_by: Literal["any", "math_verify", "llama", "all", "none"]
    require_complete: bool  # ... whose reasoning is complete (closed </think>)
    require_finish_stop: bool  # ... that finished with "stop" (a null finish_reasons passes)
    max_tokens: int  # prompt + response, in tokens of the base model's tokenizer
    # the prompt alone (the problem in its chat turn): what bounds the pairs rejection sampling builds
    # on it (prompt + up to max_new_tokens) for DPO's max_length; null: no bound beyond max_tokens
    max_prompt_tokens: int | None

    def validate(self, prefix: str) -> None:
        check(self.min_correctness_count >= 0, f"{prefix}.min_correctness_count", "must be >= 0")
        check_positive(self.max_tokens, f"{prefix}.max_tokens")
        bound = self.max_prompt_tokens
        check(bound is None or (isinstance(bound, int) and bound > 0), f"{prefix}.max_prompt_tokens",
              f"must be null or an integer > 0, got {bound!r}")


@dataclass(kw_only=True)
class Decontamination:
    """Benchmark questions among the training problems (mathpipe.data.decontaminate)."""

    ngram: int  # words per n-gram, after normalisation (open-r1: 8)
    min_coverage: float  # share of a question's n-grams a training problem must hold to be a copy
    action: Literal["drop", "report"]  # drop the copies from training, or only count them

    def validate(self, prefix: str) -> None:
        check_positive(self.ngram, f"{prefix}.ngram")
        check_range(self.min_coverage, f"{prefix}.min_coverage", 0.01, 1.0)


@dataclass(kw_only=True)
class LocalFiles:
    """Paths or globs relative to `raw_dir`; null leaves a source out."""

    openr1: list[str] | str | None
    gsm8k_train: str | None
    gsm8k_test: str | None
    cmath_test: str | None
    math_test: str | None


@dataclass
class HubFiles:
    """Files of a Hugging Face dataset repository at a pinned revision (a commit hash)."""

    repo: str
    revision: str
    files: str  # glob inside the repository, e.g. "data/train-*.parquet"

    def validate(self, prefix: str) -> None:
        check_revision(self.revision, f"{prefix}.revision", "data set")


@dataclass(kw_only=True)
class HubSources:
    openr1: HubFiles | None
    gsm8k_train: HubFiles | None
    gsm8k_test: HubFiles | None
    cmath_test: HubFiles | None
    math_test: HubFiles | None


@dataclass(kw_only=True)
class PrepareConfig:
    source: Literal["sample", "local", "hub"]
    raw_dir: str
    metrics: str  # row counts after each filter, a JSON file kept in git
    files: LocalFiles
    hub: HubSources
    out_dir: str
    tokenizer: str
    sft_sources: list[Literal["openr1", "gsm8k"]]
    trace: Literal["generation", "solution"]
    template: str
    filters: Filters
    decontamination: Decontamination
    pairs_per_problem: int  # preference pairs per problem: each a different incorrect trace
    val_fraction: float
    max_train_rows: int | None
    split_seed: int
    batch_size: int

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
    math_test: list[Path]


# benchmark -> the input that holds its test set
EVAL_FILES = {"gsm8k": "gsm8k_test", "cmath": "cmath_test", "math": "math_test"}


def resolve_inputs(cfg: PrepareConfig) -> Inputs:
    """Find every input file before any work, so a missing one fails first."""
    needed = {"openr1": "openr1" in cfg.sft_sources, "gsm8k_train": "gsm8k" in cfg.sft_sources}
    resolved = {}
    for name in ("openr1", "gsm8k_train", *EVAL_FILES.values()):
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
    """The thinking block closed and a written answer follows it."""
    text = row["generations"][i]
    return (_flag(row["is_reasoning_complete"], i) is not False and prompts.THINK_CLOSE in text
            and bool(prompts.without_thinking(text)))


def _verdicts(row: dict, i: int) -> tuple[bool | None, bool | None]:
    """(Math-Verify, Llama judge) on generation i; None where that judge gave no verdict."""
    return _flag(row["correctness_math_verify"], i), _flag(row.get("correctness_llama"), i)


def judged_correct(row: dict, i: int, rule: str) -> bool:
    """Whether generation i is correct under `rule` (Filters.correct_by)."""
    math_verify, llama = _verdicts(row, i)
    if rule == "none":
        return True
    if rule == "math_verify":
        return math_verify is True
    if rule == "llama":
        return llama is True
    if rule == "all":  # every judge that gave a verdict says correct
        given = [v for v in (math_verify, llama) if v is not None]
        return bool(given) and all(given)
    return math_verify is True or llama is True  # any: OpenR1's own rule


def judged_wrong(row: dict, i: int) -> bool:
    """Every judge that gave a verdict says wrong (and at least one did): a trace fit to be rejected."""
    given = [v for v in _verdicts(row, i) if v is not None]
    return bool(given) and not any(given)


def filter_openr1_row(row: dict, f: Filters, counts: Counter) -> list[int] | None:
    """Indices of the usable correct generations, or None if the row is dropped (counted by reason)."""
    if (row["correctness_count"] or 0) < f.min_correctness_count:
        counts["dropped_min_correctness_count"] += 1
        return None
    usable = list(range(len(row["generations"] or [])))
    steps = (
        ("correct", lambda i: judged_correct(row, i, f.correct_by)),
        ("complete", (lambda i: _complete(row, i)) if f.require_complete else None),
        ("finish_stop", (lambda i: _finished(row, i)) if f.require_finish_stop else None),
    )
    for name, keep in steps:
        if keep is not None:
            usable = [i for i in usable if keep(i)]
            if not usable:
                counts[f"dropped_{name}"] += 1
                return None
    return usable


def rejected_traces(row: dict) -> list[str]:
    """The generations wrong by every judge, complete and finished, in their order."""
    return [text for i, text in enumerate(row["generations"] or [])
            if judged_wrong(row, i) and _complete(row, i) and _finished(row, i)]


def count_traces(row: dict, counts: Counter) -> None:
    """Per-trace verdicts of one row (metrics/prepare.json `openr1_traces`): who judged it correct."""
    for i in range(len(row["generations"] or [])):
        math_verify, llama = _verdicts(row, i)
        counts["read"] += 1
        if math_verify is True and llama is True:
            counts["correct_by_both"] += 1
        elif math_verify is True:
            counts["correct_by_math_verify_only"] += 1
        elif llama is True:
            counts["correct_by_llama_only"] += 1
        elif judged_wrong(row, i):
            counts["wrong_by_every_judge"] += 1
        else:
            counts["no_verdict"] += 1


class TokenCounter:
    """Token length of a chat conversation rendered with the base model's chat template."""

    def __init__(self, tokenizer, chat_template_kwargs: dict | None = None):
        self.tokenizer = tokenizer
        self.chat_template_kwargs = chat_template_kwargs

    def __call__(self, conversations: list[list[dict]]) -> list[int]:
        if not conversations:  # a fast tokenizer fails on an empty batch (a batch without pairs)
            return []
        texts = [prompts.render(self.tokenizer, c, self.chat_template_kwargs) for c in conversations]
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


@dataclass
class Candidate:
    """A problem that passed the per-row filters: its usable targets and its incorrect traces."""

    rid: str
    source: str
    problem: str
    answer: str
    targets: list[str]  # verified outputs; the shortest one that fits max_tokens becomes the SFT target
    rejected: list[str] = field(default_factory=list)  # paired against the targets that fit


class _Collector:
    """Accumulates kept records by split: the length filter (the shortest fitting target wins), then
    de-duplication (so a copy dropped by a filter does not hide a usable one), then the train-row cap."""

    def __init__(self, cfg: PrepareConfig, tokenizer, chat_template_kwargs: dict | None = None,
                 benchmarks: BenchmarkIndex | None = None):
        self.cfg = cfg
        self.benchmarks = benchmarks
        self.contaminated: dict[str, set[str]] = defaultdict(set)  # benchmark -> question ids found in training
        self.contaminating: Counter = Counter()  # benchmark -> training problems that copy one of its questions
        self.plain_overlap: Counter = Counter()  # benchmark -> training problems sharing any n-gram with it
        self.count_tokens = TokenCounter(tokenizer, chat_template_kwargs)
        self.sft: dict[str, list[dict]] = {"train": [], "val": []}
        self.pairs: dict[str, list[dict]] = {"train": [], "val": []}
        self.pair_counts: Counter = Counter()
        self.seen: set[str] = set()

    def full(self) -> bool:
        cap = self.cfg.max_train_rows
        return cap is not None and len(self.sft["train"]) >= cap

    def add(self, candidates: list[Candidate], counts: Counter) -> None:
        if not candidates:
            return
        limit, template = self.cfg.filters.max_tokens, self.cfg.template
        conversation = lambda c, output: prompts.messages(c.problem, template) + [  # noqa: E731
            {"role": "assistant", "content": output}]
        target_lengths = iter(self.count_tokens([conversation(c, t) for c in candidates for t in c.targets]))
        rejected_lengths = iter(self.count_tokens([conversation(c, r) for c in candidates for r in c.rejected]))
        prompt_limit = self.cfg.filters.max_prompt_tokens
        prompt_lengths = (self.count_tokens([prompts.messages(c.problem, template) for c in candidates])
                          if prompt_limit is not None else [0] * len(candidates))
        for c, prompt_length in zip(candidates, prompt_lengths):
            lengths = [next(target_lengths) for _ in c.targets]
            rejected = [(r, next(rejected_lengths)) for r in c.rejected]
            if self.is_contaminated(c.problem) and self.cfg.decontamination.action == "drop":
                counts["dropped_contaminated"] += 1
                continue
            if prompt_limit is not None and prompt_length > prompt_limit:
                counts["dropped_prompt_tokens"] += 1
                continue
            fitting = sorted((n, k) for k, n in enumerate(lengths) if n <= limit)  # shortest first, then order
            if not fitting:
                counts["dropped_max_tokens"] += 1
                continue
            key = normalise_problem(c.problem)
            if key in self.seen:
                counts["dropped_duplicate"] += 1
                continue
            self.seen.add(key)
            split = "val" if is_validation(c.problem, self.cfg.val_fraction, self.cfg.split_seed) else "train"
            if split == "train" and self.full():
                continue
            self.sft[split].append(sft_record(c.rid, c.source, c.problem, c.answer, c.targets[fitting[0][1]], template))
            for k, (text, length) in enumerate(rejected[: self.cfg.pairs_per_problem]):
                self.pair_counts["candidates"] += 1
                chosen_length, chosen = fitting[k % len(fitting)]
                if max(chosen_length, length) > limit:
                    self.pair_counts["dropped_max_tokens"] += 1
                    continue
                self.pair_counts["kept"] += 1
                rid = c.rid if k == 0 else f"{c.rid}#{k}"  # the first keeps the problem's id
                self.pairs[split].append(pair_record(rid, c.problem, c.answer, c.targets[chosen], text, template))


    def is_contaminated(self, problem: str) -> bool:
        """Whether the problem copies a benchmark question; counts it per benchmark either way."""
        if self.benchmarks is None:
            return False
        shared, matches = self.benchmarks.check(problem)
        for benchmark in {self.benchmarks.benchmark[q] for q in shared}:
            self.plain_overlap[benchmark] += 1
        for benchmark in {self.benchmarks.benchmark[q] for q in matches}:
            self.contaminating[benchmark] += 1
        for qid in matches:
            self.contaminated[self.benchmarks.benchmark[qid]].add(qid)
        return bool(matches)

    def decontamination_summary(self, benchmarks: list[str]) -> dict:
        d = self.cfg.decontamination
        return {"criterion": f"{d.ngram}-gram coverage >= {d.min_coverage:g} and the question's numbers in order",
                "action": d.action,
                **{b: {"questions_in_training": len(self.contaminated[b]),
                       "training_problems_matched": self.contaminating[b],
                       "training_problems_sharing_any_ngram": self.plain_overlap[b]} for b in benchmarks}}


def run_prepare(cfg: PrepareConfig, tokenizer, inputs: Inputs, chat_template_kwargs: dict | None = None) -> dict:
    """Write all outputs of prepare into cfg.out_dir (atomically) and return the counts.

    With thinking off (`chat_template_kwargs`), the targets and rejected traces keep only what
    follows the thinking, as a non-thinking model answers."""
    thinking = prompts.thinking(chat_template_kwargs)
    # The benchmarks first: they are small, and a bad one should stop the stage before the shards.
    eval_sets = {name: eval_rows(name, getattr(inputs, key)) for name, key in EVAL_FILES.items()}
    index = BenchmarkIndex({name: [(r["id"], r["question"]) for r in rows] for name, rows in eval_sets.items()},
                           cfg.decontamination.ngram, cfg.decontamination.min_coverage)
    kept = _Collector(cfg, tokenizer, chat_template_kwargs, index)
    counts: dict[str, Counter] = {"openr1": Counter(), "gsm8k_train": Counter()}
    traces: Counter = Counter()

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
                count_traces(row, traces)
                usable = filter_openr1_row(row, cfg.filters, c)
                if usable is not None:
                    candidates.append(openr1_candidate(row, usable, cfg, thinking))
            kept.add(candidates, c)
            if kept.full():
                break

    if "gsm8k" in cfg.sft_sources and not kept.full():
        c = counts["gsm8k_train"]
        candidates = []
        for i, row in enumerate(readers.iter_gsm8k(inputs.gsm8k_train)):
            c["read"] += 1
            reasoning, answer = gsm8k_reasoning(row["answer"])
            candidates.append(Candidate(f"gsm8k-train-{i}", "gsm8k", row["question"], answer,
                                        [prompts.response(reasoning, answer, thinking)]))
        for chunk in _batched(iter(candidates), cfg.batch_size):
            kept.add(chunk, c)

    summary = {name: _remaining(c) for name, c in counts.items() if c["read"]}
    if traces["read"]:
        summary["openr1_traces"] = {"correct_by": cfg.filters.correct_by, **{k: traces[k] for k in TRACE_COUNTS}}
    summary["pairs"] = {k: kept.pair_counts[k] for k in ("candidates", "dropped_max_tokens", "kept")}
    summary["decontamination"] = kept.decontamination_summary(list(eval_sets))
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


def _visible(trace: str, thinking: bool) -> str:
    """An R1 trace as a target: whole with thinking on (even unfinished, if the filters let it
    through), what follows its thinking with thinking off."""
    return trace if thinking else prompts.without_thinking(trace)


def openr1_candidate(row: dict, usable: list[int], cfg: PrepareConfig, thinking: bool = True) -> Candidate:
    """A kept OpenR1 row: its usable correct traces (or the reference solution) as targets, and up to
    cfg.pairs_per_problem incorrect traces to pair against them."""
    answer = row["answer"] or ""
    if cfg.trace == "generation":
        targets = [_visible(row["generations"][i], thinking) for i in usable]
    else:
        targets = [prompts.response(row["solution"] or "", answer, thinking)]
    rejected = [_visible(text, thinking) for text in rejected_traces(row)]
    return Candidate(row["uuid"], "openr1", row["problem"], answer, targets, rejected)


_CALCULATOR = re.compile(r"<<[^<>]*>>")


def gsm8k_reasoning(answer: str) -> tuple[str, str]:
    """Split a GSM8K solution into its reasoning (calculator annotations removed) and final answer."""
    body, _, final = answer.rpartition("####")
    return _CALCULATOR.sub("", body).strip(), final.strip()


EVAL_READERS = {"gsm8k": (readers.iter_gsm8k, "answer"), "cmath": (readers.iter_cmath, "golden"),
                "math": (readers.iter_math, "answer")}


def eval_rows(benchmark: str, paths: list[Path]) -> list[dict]:
    """A benchmark's questions with their final answers, checked like training files: a file with no
    question, or a gold answer no prediction could ever match (not a number; for math, not even LaTeX
    that Math-Verify reads), is an error naming the file and row."""
    read, field = EVAL_READERS[benchmark]
    rows = []
    for path in paths:
        before = len(rows)
        for i, r in enumerate(read([path])):
            gold = extract_gold(r[field], benchmark)
            if not gold_is_checkable(gold, benchmark):
                kind = "a number or LaTeX that Math-Verify parses" if benchmark == "math" else "a number"
                raise DataError(f"{path}: row {i + 1}: gold answer {gold!r} is not {kind}, so no prediction "
                                f"could ever match it")
            rows.append({"id": f"{benchmark}-test-{len(rows)}", "question": r["question"], "gold": gold,
                         "reference": r[field]})
        if len(rows) == before:
            raise DataError(f"{path}: no questions (the file is empty): a benchmark of 0 questions measures nothing")
    return rows


FILTER_ORDER = ("empty_problem", "min_correctness_count", "correct", "complete", "finish_stop", "contaminated",
                "prompt_tokens", "max_tokens", "duplicate")
TRACE_COUNTS = ("read", "correct_by_both", "correct_by_math_verify_only", "correct_by_llama_only",
                "wrong_by_every_judge", "no_verdict")


def _remaining(c: Counter) -> dict[str, int]:
    """Rows left after each filter, in the order they are applied, from the drop counts."""
    left = c["read"]
    out = {"read": left}
    for name in FILTER_ORDER:
        left -= c[f"dropped_{name}"]
        out[f"after_{name}"] = left
    return out
