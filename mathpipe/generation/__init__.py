"""The one generation interface. Every stage that samples text calls `Generator.generate`.

    engine = from_params(EngineSettings, "evaluate.engine", backend="auto")  # vLLM if usable, else transformers
    gen = make_generator("models/sft", engine)
    outs = gen.generate(prompts, from_params(GenerationSettings, "evaluate.generation", n=4, temperature=0.8))
    outs[i][j].text   # j-th completion of prompt i, stop strings and EOS removed
    gen.close()       # frees the engine's memory (vLLM reserves most of the GPU)

Prompts are already rendered with the chat template (`mathpipe.prompts.render_prompt`) and are
tokenized here, without adding special tokens, so every backend sees the same token ids. Two
backends: `transformers` (`model.generate`, transformers_backend.py) and `vllm` (vllm_backend.py).
Settings and results live in settings.py (no torch), the decoding both backends share in decoding.py.
"""

from __future__ import annotations

import logging

from mathpipe.errors import PipelineError
from mathpipe.generation.settings import Completion, EngineSettings, GenerationSettings, Generator

__all__ = ["Completion", "EngineSettings", "GenerationSettings", "Generator", "make_generator"]

log = logging.getLogger(__name__)


def make_generator(model_path: str, engine: EngineSettings) -> Generator:
    """The backend `engine.backend` names; `auto` takes vLLM when it is usable here and logs why not."""
    backend = engine.backend
    if backend not in ("auto", "vllm", "transformers"):
        raise PipelineError(f"unknown generation backend '{backend}' (known: auto, vllm, transformers)")
    if backend in ("auto", "vllm"):
        from mathpipe.generation import vllm_backend

        reason = vllm_backend.unavailable_reason(model_path)
        if reason is None:
            if engine.data_parallel_size > 1:
                return vllm_backend.DataParallelVLLM(model_path, engine)
            return vllm_backend.VLLMGenerator(model_path, engine)
        if backend == "vllm":
            raise PipelineError(f"generation backend 'vllm' cannot run here: {reason}")
        log.info("backend auto: using transformers because %s", reason)
        if engine.data_parallel_size > 1:
            log.warning("data_parallel_size %d ignored: the transformers backend runs one model",
                        engine.data_parallel_size)
    from mathpipe.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(model_path, dtype=engine.dtype, batch_size=engine.batch_size,
                                 trust_remote_code=engine.trust_remote_code)
