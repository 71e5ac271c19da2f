"""Generation engines: how batches of prompt token ids become new token ids.

Every engine is an existing one from transformers, driven with settings that keep its work on the GPU:

- ``plain``: ``model.generate`` on each left-padded batch with its default dynamic KV cache (the cache
  grows by concatenation at every step). Works everywhere, with every decoding option.
- ``static``: ``model.generate`` with a ``StaticCache`` and a fixed batch size (a short last batch is
  filled with copies of its last row, whose outputs are dropped), so that every decoding step has the same
  shapes; on a CUDA GPU transformers then compiles the decoding step (torch.compile, CUDA graphs) and
  replays it for every batch of that shape. Every step reads the whole cache, so its length follows the
  batches (longest prompts first): the first batch's cache fits its prompt plus ``max_new_tokens``; a
  later batch gets a shorter cache (rounded up to ``STATIC_CACHE_STEP``) when it needs at most
  ``STATIC_SHRINK`` of the shortest one made so far, up to ``STATIC_MAX_CACHES`` caches per run, each
  compiled once; otherwise it reuses the shortest that fits. The first batch of each length pays for
  its compilation. A model with SDPA attention decodes with ``covertune.generation.gqa_attention`` meanwhile: compiled,
  transformers' SDPA would copy the key/value heads once per query head that shares them at every step.
- ``continuous``: transformers' continuous batching (``model.generate_batch``: a paged KV cache, a row
  that stops frees its place for the next prompt at once). Greedy or sampling without a repetition
  penalty (its logits processors do not cover every option; asked for with one, it refuses rather than
  drop it). Opt-in only: in a measurement it wrote other letters than ``plain`` for part of the embedded
  model's test prompts, most of them off-topic.
- ``auto``: ``static`` for a model of at least ``STATIC_MIN_PARAMS`` (1e9) parameters on a CUDA GPU,
  else ``plain``: on a 7B-shaped model ``static`` was faster from its first pass, compilation included; on
  the 135M embedded model the compilation is never won back in one pass over a split. The threshold lies
  between those two measured sizes.

The measurements behind these choices (engines, batch sizes, transformers versions, GPUs) are in
docs/PERFORMANCE.md, "Generation engines"; they live there, not here, so that this text does not go stale.

Greedy letters are the same token for token as ``plain``'s in exact arithmetic (the tests compare them on
a tiny model in fp32); in bf16 on a GPU, different kernels round differently and a near-tie can tip a
greedy choice.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext
from typing import Iterable, Iterator, Sequence

import torch

from covertune.config.options import Engine, choices
from covertune.generation import gqa_attention
from covertune.generation.decoding import generate_batch, cut_at_stop

log = logging.getLogger(__name__)

ENGINES = choices(Engine)  # the --engine option's values (covertune.config)


def _device(model) -> torch.device:
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


STATIC_MIN_PARAMS = 1_000_000_000  # auto picks static from this model size on a CUDA GPU


def _parameters(model) -> int:
    count = getattr(model, "num_parameters", None)
    return int(count()) if callable(count) else sum(p.numel() for p in model.parameters())


def resolve(engine: str, model=None, decoding=None) -> str:
    """The engine that runs: ``auto`` -> ``static`` for a model of ``STATIC_MIN_PARAMS`` or more on a CUDA
    GPU, else ``plain`` (see the module's notes). A named engine that cannot honour the decoding settings is
    an error that says which to use."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        if model is not None and _device(model).type == "cuda" and _parameters(model) >= STATIC_MIN_PARAMS:
            return "static"
        return "plain"
    if engine == "continuous" and decoding is not None and decoding.repetition_penalty != 1.0:
        raise ValueError("engine 'continuous' does not apply a repetition penalty; use --engine static or "
                         "plain, or --repetition-penalty 1.0")
    if engine == "continuous" and model is not None and _device(model).type == "cuda":
        log.warning("engine 'continuous' wrote other letters than 'plain' for about a quarter of the prompts "
                    "in a measurement with transformers 5.17 (docs/PERFORMANCE.md); 'static' writes the same")
    return engine


def generate_batches(model, batches: Iterable[tuple[list[int], list[list[int]]]], *, engine: str,
                     stop: Sequence[int], pad: int, decoding, batch_size: int,
                     max_prompt_tokens: int) -> Iterator[tuple[list[int], list[list[int]]]]:
    """Yield ``(row indices, new token ids per row)`` for each ``(row indices, prompt ids)`` batch, decoded
    with ``decoding`` (a ``covertune.generation.decoding.Decoding``).

    ``max_prompt_tokens`` (the longest prompt of the whole run) bounds the static caches' length
    (``cache_length``); ``batch_size`` is the fixed batch of ``static`` and the number of sequences
    ``continuous`` keeps in flight."""
    if engine == "continuous":
        yield from _continuous(model, batches, stop=stop, pad=pad, decoding=decoding, batch_size=batch_size)
        return
    extra: dict = {}
    if engine == "static":
        from transformers.generation.configuration_utils import CompileConfig

        if _device(model).type == "cuda":  # transformers compiles the decoding step (CUDA graphs)
            extra["compile_config"] = CompileConfig(fullgraph=True, dynamic=False)
    # static: compiled decoding would copy the key/value heads at every step (covertune.generation.gqa_attention)
    with gqa_attention.packed(model) if engine == "static" and STATIC_PACK_GQA else nullcontext():
        yield from _batches(model, batches, engine=engine, stop=stop, pad=pad, decoding=decoding,
                            batch_size=batch_size, max_prompt_tokens=max_prompt_tokens, extra=extra)


def _batches(model, batches, *, engine, stop, pad, decoding, batch_size, max_prompt_tokens, extra):
    caches: dict = {}  # static: cache length -> StaticCache
    for batch, rows in batches:
        fill = 0
        if engine == "static":
            fill = max(batch_size - len(rows), 0)
            rows = list(rows) + [rows[-1]] * fill
            need = max(len(r) for r in rows) + decoding.max_new_tokens
            extra["past_key_values"] = _static_cache(model, caches, cache_length(
                need, sorted(caches), max_prompt_tokens + decoding.max_new_tokens))
        with warnings.catch_warnings():
            # newer transformers call the argument `cache`; 5.17 knows only `past_key_values`
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            new = generate_batch(model, rows, decoding, stop, pad, **extra)
        yield batch, new[:len(new) - fill]


STATIC_PACK_GQA = True  # static: SDPA attention without key/value copies (covertune.generation.gqa_attention)
STATIC_CACHE_STEP = 64  # static cache lengths are rounded up to a multiple of this
STATIC_SHRINK = 0.75  # a shorter cache is made only for a batch that needs at most this share of one
STATIC_MAX_CACHES = 3  # static caches (compiled decoding steps) per run at most


def cache_length(need: int, made: Sequence[int], longest: int) -> int:
    """The static cache length for a batch that needs ``need`` positions (its widest prompt plus
    ``max_new_tokens``), given the lengths ``made`` so far in this run (ascending) and ``longest``, the run's
    longest prompt plus ``max_new_tokens``: the shortest made one that fits, unless a new one (``need``
    rounded up to ``STATIC_CACHE_STEP``, at most ``longest``) would be at most ``STATIC_SHRINK`` of it and
    fewer than ``STATIC_MAX_CACHES`` exist. When none fits, a new one, whatever the count."""
    fits = [n for n in made if n >= need]
    new = min(-(-need // STATIC_CACHE_STEP) * STATIC_CACHE_STEP, max(longest, need))
    if fits and (len(made) >= STATIC_MAX_CACHES or new > STATIC_SHRINK * fits[0]):
        return fits[0]
    return new


def _static_cache(model, caches: dict, length: int):
    """The run's ``StaticCache`` of ``length`` positions, made on first use and emptied for each batch."""
    from transformers import StaticCache

    if length not in caches:
        caches[length] = StaticCache(config=model.config, max_cache_len=length)
    with torch.inference_mode():
        caches[length].reset()
    return caches[length]


def _continuous(model, batches, *, stop, pad, decoding, batch_size):
    """All batches through transformers' continuous batching, a group of batches per ``generate_batch``
    call (each call's rows are returned together, so a journal still records progress as it goes)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    kw = decoding.generate_kwargs()
    kw.pop("num_beams", None)
    config = GenerationConfig(**kw, eos_token_id=list(stop), pad_token_id=pad)
    cb_config = ContinuousBatchingConfig(max_requests_per_batch=batch_size)
    group_rows = 4 * batch_size
    pending: list[tuple[list[int], list[list[int]]]] = []

    def flush():
        indices = [i for b, _ in pending for i in b]
        prompts = [r for _, rows in pending for r in rows]
        outputs = model.generate_batch(inputs=prompts, generation_config=config,
                                       continuous_batching_config=cb_config, progress_bar=False)
        results = list(outputs.values())
        failed = [r.error for r in results if r.error is not None]
        if len(results) != len(prompts) or failed:
            raise RuntimeError(f"continuous batching returned {len(results)} of {len(prompts)} rows"
                               f"{': ' + failed[0] if failed else ''}; use --engine static or plain")
        return indices, [cut_at_stop(r.generated_tokens, stop) for r in results]

    for batch, rows in batches:
        pending.append((batch, rows))
        if sum(len(b) for b, _ in pending) >= group_rows:
            yield flush()
            pending = []
    if pending:
        yield flush()
