"""The real profile rehearsed on CPU: a local Hugging Face cache that holds a Qwen3-0.6B-shaped model
and data in the real schemas at real lengths, for profiles/qwen3-rehearsal.yaml.

    make rehearse                                   # builds the cache, then runs the profile through it
    python -m mathpipe.tools.rehearsal build --cache .rehearsal/hub --layers 2
    python -m mathpipe.tools.rehearsal run               # what `make rehearse` runs: build, then the profile

The model has Qwen3-0.6B's `config.json` (hidden 1024, 16 query / 8 KV heads of 128, tied embeddings,
151,936-entry vocabulary, RoPE theta 1e6, 40,960 positions) with fewer layers, random weights saved
in bf16 as the Hub ships them, the real Qwen3 chat template (as TRL ships it) and a tokenizer with
Qwen3's special tokens at Qwen3's ids. The data repository holds OpenR1-schema shards whose traces
run to thousands of tokens (some cut off on length, some without the Llama judge's verdicts or
finish reasons) and the real GSM8K, CMATH and MATH-500 test files from ../shared/data. Both are
laid out as huggingface_hub lays out its cache (blobs, snapshots, refs), so the stages load them
through the same download code as a Hub model, offline. Weights are random: the rehearsal measures
that every stage runs and what it costs, not accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mathpipe.cli import FIGURES_ENV  # run_stage appends each stage's time and memory there
from mathpipe.errors import DataError
from mathpipe.io import read_json, write_json

log = logging.getLogger(__name__)

MODEL_REPO = "mathpipe-rehearsal/Qwen3-0.6B-shaped"
DATA_REPO = "mathpipe-rehearsal/math-data"
BUILD_VERSION = 2  # raise when the build writes something else for the same settings


def revision(layers: int = 2, problems: int = 64, seed: int = 0, min_chars: int = 3000, max_chars: int = 9000) -> str:
    """The commit a build is cached under, from its settings: another build is another revision, so
    DVC (which tracks Hub inputs by their pinned revision) re-runs what reads it."""
    key = f"mathpipe rehearsal {BUILD_VERSION}: {layers} {problems} {seed} {min_chars} {max_chars}"
    return hashlib.sha1(key.encode()).hexdigest()


REVISION = revision()  # the default build: profiles/qwen3-rehearsal.yaml pins it
QWEN3_CONFIG = Path(__file__).resolve().parents[2] / "profiles" / "qwen3-0.6b.config.json"
SHARED_DATA = Path("../shared/data")
DEFAULT_CACHE = Path(".rehearsal/hub")

# Qwen3's added tokens, in the order (and so at the ids, from 151,643) its tokenizer.json has them.
QWEN3_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
               "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
               "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
               "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
QWEN3_FIRST_ADDED_ID = 151643
NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}


# --- the cache layout ------------------------------------------------------------------------------


def repo_folder(cache: Path, repo_id: str, repo_type: str) -> Path:
    return cache / f"{repo_type}s--{repo_id.replace('/', '--')}"


def write_snapshot(cache: Path, repo_id: str, repo_type: str, files: dict[str, Path], commit: str) -> Path:
    """`files` (path in the repository -> local file) as huggingface_hub caches a snapshot: each file a
    blob named by its hash, linked from snapshots/<commit>/, and refs/main naming the commit."""
    root = repo_folder(cache, repo_id, repo_type)
    snapshot = root / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for name, source in sorted(files.items()):
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        blob = root / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(source, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


# --- the model -------------------------------------------------------------------------------------


def qwen3_shaped_tokenizer(texts, bpe_vocab: int = 4096):
    """A byte-level BPE trained on `texts`, its vocabulary padded with unreachable tokens so that
    Qwen3's added tokens sit at Qwen3's ids (151,643 on), with Qwen3's chat template."""
    import trl
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    from mathpipe.training.tiny_model import train_tokenizer

    trained = train_tokenizer(texts, bpe_vocab, 40960).backend_tokenizer
    spec = json.loads(trained.to_str())
    specials = {t["content"] for t in spec["added_tokens"]}
    vocab = {tok: i for i, tok in enumerate(t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
                                            if t not in specials)}
    for i in range(len(vocab), QWEN3_FIRST_ADDED_ID):  # letters and digits: ByteLevel decodes them as they are
        vocab[f"zq{i}"] = i
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = []
    tok = Tokenizer.from_str(json.dumps(spec))
    for t in QWEN3_ADDED:  # one at a time: each takes the next id
        if t in NOT_SPECIAL:
            tok.add_tokens([AddedToken(t, normalized=False, special=False)])
        else:
            tok.add_special_tokens([AddedToken(t, normalized=False, special=True)])
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        chat_template=template, model_max_length=131072, padding_side="right",
                                        clean_up_tokenization_spaces=False)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in QWEN3_ADDED]
    if ids != list(range(QWEN3_FIRST_ADDED_ID, QWEN3_FIRST_ADDED_ID + len(QWEN3_ADDED))):
        raise AssertionError(f"Qwen3's added tokens landed at {ids[:3]}..., not at Qwen3's ids")
    return tokenizer


def qwen3_shaped_config(layers: int) -> dict:
    config = {k: v for k, v in read_json(QWEN3_CONFIG).items() if not k.startswith("_")}
    config.update(num_hidden_layers=layers, bos_token_id=151643, eos_token_id=151645, attention_bias=False,
                  attention_dropout=0.0, initializer_range=0.02, use_cache=True, max_window_layers=layers,
                  use_sliding_window=False, sliding_window=None)
    return config


def write_model(out: Path, texts, layers: int, seed: int) -> None:
    """A Qwen3-0.6B-shaped model with `layers` layers and random weights, saved in bf16."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen3_shaped_tokenizer(texts)
    tokenizer.save_pretrained(out)
    config = Qwen3Config(**qwen3_shaped_config(layers))
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    # Qwen3-0.6B's own generation_config.json: its thinking-mode sampling settings.
    GenerationConfig(bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=True,
                     temperature=0.6, top_p=0.95, top_k=20).save_pretrained(out)


# --- the data --------------------------------------------------------------------------------------

RECHECKS = ("Wait, let me check that again.", "Hmm, is that right? Let me recompute.",
            "Let me verify this step once more.", "Actually, let me double-check the arithmetic.")


def lengthen(text: str, rng: random.Random, min_chars: int, max_chars: int) -> str:
    """An R1-length trace: the thinking re-checks its own lines until it is min..max characters."""
    head, close, tail = text.partition("</think>")
    lines = [line for line in head.split("\n") if line.strip() and line.strip() != "<think>"] or ["..."]
    target = rng.randint(min_chars, max_chars)
    extra = []
    while len(head) + sum(len(e) + 1 for e in extra) < target:
        extra.append(f"{rng.choice(RECHECKS)} {rng.choice(lines).strip()}")
    return head.rstrip("\n") + "\n" + "\n".join(extra) + "\n" + close + tail


def write_openr1_shards(sample_dir: Path, out_dir: Path, seed: int, min_chars: int, max_chars: int) -> list[Path]:
    """The sample's OpenR1 shards with every trace lengthened (cut-off ones stay without </think>)."""
    import pyarrow.parquet as pq

    from mathpipe.data.schemas import OPENR1_SCHEMA

    rng = random.Random(seed)
    paths = []
    for shard in sorted((sample_dir / "openr1").glob("*.parquet")):
        table = pq.read_table(shard)
        rows = table.to_pylist()
        for row in rows:
            row["generations"] = [lengthen(g, rng, min_chars, max_chars) for g in row["generations"]]
        out = out_dir / shard.name
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(type(table).from_pylist(rows, schema=OPENR1_SCHEMA), out)
        paths.append(out)
    return paths


def build(cache: Path, layers: int = 2, problems: int = 64, seed: int = 0, shared_data: Path = SHARED_DATA,
          min_chars: int = 3000, max_chars: int = 9000) -> dict:
    """Write the model and data repositories into `cache`; returns what was written."""
    from mathpipe.config import from_params
    from mathpipe.data.sample_data import SampleConfig, write_sample_data
    from mathpipe.training.base_model import corpus_texts

    names = ("gsm8k/test.jsonl", "gsm8k/train.jsonl", "cmath/test.jsonl", "math500/test.jsonl")
    tests = {name: shared_data / name for name in names}
    missing = [str(p) for p in tests.values() if not p.is_file()]
    if missing:
        raise DataError(f"the rehearsal evaluates on the real test files, not found: {', '.join(missing)}")
    cache, commit = Path(cache), revision(layers, problems, seed, min_chars, max_chars)
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
        tmp = Path(tmp)
        sample = from_params(SampleConfig, "sample", seed=seed, n_train=problems, n_gsm8k_train=8, n_gsm8k_test=8,
                             n_cmath_test=8, n_math_test=8, shards=2)
        write_sample_data(tmp / "sample", sample)
        shards = write_openr1_shards(tmp / "sample", tmp / "data" / "openr1", seed, min_chars, max_chars)
        data = write_snapshot(cache, DATA_REPO, "dataset",
                              {f"openr1/{p.name}": p for p in shards} | tests, commit)
        (tmp / "model").mkdir()
        write_model(tmp / "model", corpus_texts(tmp / "sample"), layers, seed)
        model = write_snapshot(cache, MODEL_REPO, "model", {p.name: p for p in (tmp / "model").iterdir()}, commit)
    log.info("rehearsal cache %s: %s and %s at %s", cache, MODEL_REPO, DATA_REPO, commit)
    return {"cache": str(cache), "revision": commit, "model": str(model), "data": str(data), "layers": layers}


# --- running it ------------------------------------------------------------------------------------


def stage_figures(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(cache: Path, profile: str, layers: int, metrics: Path) -> int:
    """Build the cache, then run the profile through it offline, with vLLM's own engine processes;
    writes each stage's wall time and peak memory to `metrics`."""
    import time

    built = build(cache, layers)
    figures = Path(tempfile.mkstemp(prefix="rehearsal-figures-", suffix=".jsonl")[1])
    env = {**os.environ, "HF_HUB_CACHE": str(Path(cache).resolve()), "HF_HUB_OFFLINE": "1",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1", FIGURES_ENV: str(figures)}
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "mathpipe.tools.run_profile", "run", profile], env=env)
    seconds = round(time.monotonic() - started, 1)
    stages = stage_figures(figures)
    figures.unlink(missing_ok=True)
    write_json(metrics, {"profile": profile, "exit_status": code, "layers": built["layers"],
                         "total_seconds": seconds, "stages": stages})
    log.info("rehearsal %s: exit %d after %.0f s, %d stage processes; figures in %s", profile, code, seconds,
             len(stages), metrics)
    return code


def main(argv: list[str] | None = None) -> int:
    from mathpipe.cli import setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "run"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--layers", type=int, default=2, help="Qwen3-0.6B has 28; the rehearsal keeps a few")
    parser.add_argument("--profile", default="qwen3-rehearsal")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/bench/rehearsal.json"))
    args = parser.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build(args.cache, args.layers), indent=2))
        return 0
    return run(args.cache, args.profile, args.layers, args.metrics)


if __name__ == "__main__":
    sys.exit(main())
