"""Which engine writes a person's letter (``covertune write --engine``): ``torch`` (transformers, the
model as ``covertune generate`` loads it) or ``llama.cpp`` (covertune.generation.llamacpp_engine: the run's model as
the GGUF ``covertune export`` writes, cached in the run directory by covertune.generation.gguf_cache). ``auto``:
llama.cpp on a machine without a CUDA GPU where llama-cpp-python is installed, else torch; a model whose
architecture the GGUF export does not cover falls back to torch. Both encode the prompt, stop and extract
the letter as covertune does; their letters are different engines' (docs/PERFORMANCE.md)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

LETTER_ENGINES = ("auto", "torch", "llama.cpp")


def resolve(engine: str) -> str:
    """``torch`` or ``llama.cpp`` for ``engine``; a clear error for llama.cpp where it is not installed."""
    from covertune.generation import llamacpp_engine
    from covertune.models import load as models

    if engine not in LETTER_ENGINES:
        raise ValueError(f"engine must be one of {', '.join(LETTER_ENGINES)}, got {engine!r}")
    if engine == "auto":
        if models.has_cuda():
            return "torch"
        if llamacpp_engine.available():
            return "llama.cpp"
        log.warning("no GPU and no llama-cpp-python: writing with torch on the CPU, about 6x slower than "
                    "llama.cpp (docs/PERFORMANCE.md); for letters in seconds: pip install 'covertune[llamacpp]'")
        return "torch"
    if engine == "llama.cpp" and not llamacpp_engine.available():
        raise ValueError("--engine llama.cpp needs llama-cpp-python: pip install 'covertune[llamacpp]'")
    return engine


def load_letter_model(engine: str, cfg, quant: str = "q8_0", threads: int = 0):
    """The LetterModel ``cfg`` (a GenerateConfig) names, its weights in the engine ``engine`` resolves to."""
    from covertune.generation import gguf_cache
    from covertune.models import letter_model

    chosen = resolve(engine)
    if chosen == "llama.cpp":
        try:
            return gguf_cache.load_letter_model(cfg, quant=quant, threads=threads)
        except ValueError as e:
            if engine != "auto" or "not supported yet" not in str(e):
                raise
            log.info("llama.cpp cannot run this model (%s); writing with torch", e)
    return letter_model.load_letter_model(cfg)
