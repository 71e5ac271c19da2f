"""A CPU engine on llama.cpp (llama-cpp-python's C API): covertune's own prompt ids in, new token ids out.

The model is a GGUF file (``covertune export``'s, cached per run by ``covertune.generation.gguf_cache``); prompts,
stop tokens and letter extraction stay covertune's (``covertune.core.prompt``, ``covertune.stages.generate``): this
engine only turns token ids into token ids, so it plugs in where ``covertune.generation.letters.generate_token_ids``
and ``covertune.generation.select.generate_candidate_ids`` decode.

How a call decodes ``P`` prompts x ``N`` candidates:

- every prompt is prefilled once, into sequence ``p * N`` of one unified key/value cache (batches of at
  most ``n_batch`` tokens); its cache is then shared with the sequences ``p * N + 1 .. p * N + N - 1``
  (``llama_memory_seq_cp``: in a unified cache the cells gain sequence ids, nothing is copied);
- every step decodes one batch holding one token of each live sequence; a sequence that writes a stop
  token (kept, as ``cut_at_stop`` keeps it) or reaches ``max_new_tokens`` leaves the batch and its own
  cells are freed;
- candidate 0 of each prompt is greedy (the argmax after the repetition penalty, as
  the torch path takes it for its unseeded row); the others sample as transformers' logits processors do:
  repetition penalty, temperature, top-k, top-p (``Decoding``). Each candidate draws from its own
  generator seeded by (``decoding.seed``, the prompt's ids, its candidate number): the same call gives
  the same candidates. (llama.cpp's arithmetic varies slightly with the batch's shape, logits by some
  1e-3 on a tiny model, so a sampled letter can change with the prompts and candidates that share its
  batch, as in torch.)

With ``n == 1`` and greedy decoding this is plain greedy decoding of a batch of prompts.
"""

from __future__ import annotations

import ctypes
import logging
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_BATCH = 512  # prompt tokens per llama_decode call (llama.cpp's n_batch)


def available() -> bool:
    """Whether llama-cpp-python is installed (``pip install 'covertune[llamacpp]'``)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def physical_cores() -> int:
    """The machine's physical cores (llama.cpp's matrix products gain nothing from hyper-threads)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    return max(1, n or os.cpu_count() or 1)


def _lib():
    try:
        import llama_cpp
    except ImportError:
        raise RuntimeError("the llama.cpp engine needs llama-cpp-python: pip install 'covertune[llamacpp]' "
                           "(built from its sdist, a few minutes once)") from None
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:  # llama.cpp's own log: its errors to this module's logger, the rest dropped
        @llama_cpp.llama_log_callback
        def _log(level, text, user_data):
            message = text.decode("utf-8", "replace").rstrip()
            if level == 3 and "possible training context overflow" not in message:  # GGML_LOG_LEVEL_ERROR
                log.error("llama.cpp: %s", message)
            # (the unified cache holds every candidate of a prompt: its size may pass the trained context
            # while no sequence's positions do, which generate checks)

        _LOG_CALLBACK = _log  # kept: llama.cpp holds only the pointer
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    return llama_cpp


_LOG_CALLBACK = None


def _seeds(seed: int, prompt: Sequence[int], k: int) -> np.random.SeedSequence:
    key = zlib.crc32(np.asarray(prompt, dtype=np.int64).tobytes())
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, key, k])


def _process(logits: np.ndarray, seen: np.ndarray | None, decoding) -> np.ndarray:
    """transformers' repetition penalty on the ids ``seen`` (prompt and letter so far)."""
    if decoding.repetition_penalty != 1.0 and seen is not None and len(seen):
        logits = logits.copy()
        picked = logits[seen]
        logits[seen] = np.where(picked < 0, picked * decoding.repetition_penalty,
                                picked / decoding.repetition_penalty)
    return logits


def warp(logits: np.ndarray, decoding) -> np.ndarray:
    """The scores transformers' sampling warpers leave: divided by the temperature, then top-k (ties at
    the k-th score kept), then top-p (the smallest set of tokens whose probability reaches ``top_p``, at
    least one); the tokens filtered out at -inf."""
    scores = logits.astype(np.float64) / decoding.temperature
    if 0 < decoding.top_k < scores.size:
        kth = np.partition(scores, -decoding.top_k)[-decoding.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    if decoding.top_p < 1.0:
        order = np.argsort(scores, kind="stable")  # ascending, as TopPLogitsWarper sorts
        probs = np.exp(scores[order] - scores[order[-1]])
        probs /= probs.sum()
        drop = np.cumsum(probs) <= 1 - decoding.top_p
        drop[-1] = False
        scores[order[drop]] = -np.inf
    return scores


def sample(logits: np.ndarray, decoding, rng: np.random.Generator) -> int:
    """One token drawn from the softmax of ``warp(logits, decoding)`` with ``rng``."""
    scores = warp(logits, decoding)
    cdf = np.cumsum(np.exp(scores - scores.max()))
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), cdf.size - 1))


class LlamaCppModel:
    """A GGUF model in llama.cpp on the CPU, decoding covertune's token ids.

    ``threads``: llama.cpp's threads (default: the physical cores). ``generation_config`` (optional, a
    transformers GenerationConfig) is read by ``covertune.generation.decoding.stop_token_ids`` as a torch model's is,
    so both engines stop at the same tokens."""

    device = None  # not a torch model: covertune.generation.engines never picks a torch engine for it
    is_llamacpp = True

    def __init__(self, path: str | os.PathLike, threads: int = 0, generation_config=None,
                 n_batch: int = DEFAULT_BATCH):
        lib = _lib()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model {path}: no such file")
        self.path, self.lib, self.n_batch = path, lib, n_batch
        self.threads = threads or physical_cores()
        self.generation_config = generation_config
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        self._model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {path} (not a GGUF model it reads)")
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        self.n_ctx_train = lib.llama_model_n_ctx_train(self._model)
        self._ctx = None
        self._ctx_size = (0, 0)  # (cells, sequences) of the context held

    # ------------------------------------------------------------ context and batches

    def _context(self, cells: int, seqs: int):
        """A context with a unified cache of at least ``cells`` cells for ``seqs`` sequences, emptied."""
        lib = self.lib
        max_seqs = lib.llama_max_parallel_sequences()
        if seqs > max_seqs:
            raise ValueError(f"llama.cpp decodes at most {max_seqs} sequences at once, {seqs} asked for")
        if self._ctx is None or cells > self._ctx_size[0] or seqs > self._ctx_size[1]:
            self._free_context()
            cells = -(-max(cells, 256) // 256) * 256
            params = lib.llama_context_default_params()
            params.n_ctx = cells
            params.n_batch = max(self.n_batch, seqs)
            params.n_ubatch = max(self.n_batch, seqs)
            params.n_seq_max = seqs
            params.kv_unified = True
            params.n_threads = params.n_threads_batch = self.threads
            params.no_perf = True
            self._ctx = lib.llama_init_from_model(self._model, params)
            if not self._ctx:
                raise RuntimeError(f"llama.cpp could not make a context of {cells} cells for {seqs} sequences")
            self._ctx_size = (cells, seqs)
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        return self._ctx

    def _decode(self, ctx, batch, items: Sequence[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Decode ``items`` (token, position, sequence, wants logits) as one batch; the logits asked for."""
        lib = self.lib
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, out) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if out else 0
        rc = lib.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} ({len(items)} tokens)")
        return [np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, i), shape=(self.n_vocab,)).copy()
                for i, it in enumerate(items) if it[3]]

    # ------------------------------------------------------------ public

    def prompt_logits(self, ids: Sequence[int]) -> np.ndarray:
        """The logits at every position of ``ids`` (teacher forcing), shape (len(ids), vocabulary)."""
        ids = [int(t) for t in ids]
        ctx = self._context(len(ids) + 1, 1)
        batch = self.lib.llama_batch_init(max(self.n_batch, 1), 0, 1)
        try:
            rows = []
            for s in range(0, len(ids), self.n_batch):
                rows += self._decode(ctx, batch, [(t, s + j, 0, True) for j, t in enumerate(ids[s:s + self.n_batch])])
        finally:
            self.lib.llama_batch_free(batch)
        return np.stack(rows)

    def generate(self, prompts: Sequence[Sequence[int]], n: int, decoding, stop: Sequence[int],
                 greedy_first: bool = True, on_token: Callable[[int, int], bool] | None = None
                 ) -> list[list[list[int]]]:
        """``n`` candidates' new token ids for each prompt (each cut after its first stop token, which is
        kept): candidate 0 greedy (unless ``greedy_first`` is off), the others sampled by ``decoding``
        (greedy too when it does not sample). All prompts and candidates of the call are decoded together
        (see the module's notes). ``on_token(sequence, token)``, if given, is called for every new token
        (sequence ``p * n + k``: prompt p's candidate k); when it returns True the sequence ends there (a
        server's finished or abandoned request)."""
        if n < 1:
            raise ValueError(f"candidates must be at least 1, got {n}")
        prompts = [[int(t) for t in p] for p in prompts]
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise ValueError("an empty prompt: llama.cpp needs at least one prompt token")
        longest = max(len(p) for p in prompts)
        if longest + decoding.max_new_tokens > self.n_ctx_train:
            raise ValueError(f"a prompt of {longest} tokens plus {decoding.max_new_tokens} new tokens does not fit "
                             f"the model's context of {self.n_ctx_train}")
        lib, stop_set = self.lib, set(int(s) for s in stop)
        seqs = len(prompts) * n
        cells = sum(len(p) for p in prompts) + seqs * decoding.max_new_tokens
        ctx = self._context(cells, seqs)
        mem = lib.llama_get_memory(ctx)
        batch = lib.llama_batch_init(max(self.n_batch, seqs), 0, 1)
        try:
            # prefill every prompt once, into its first candidate's sequence
            first: list[np.ndarray] = []
            items = [(t, j, p * n, j == len(ids) - 1) for p, ids in enumerate(prompts) for j, t in enumerate(ids)]
            for s in range(0, len(items), self.n_batch):
                first += self._decode(ctx, batch, items[s:s + self.n_batch])
            for p in range(len(prompts)):
                for k in range(1, n):
                    lib.llama_memory_seq_cp(mem, p * n, p * n + k, -1, -1)
            out: list[list[int]] = [[] for _ in range(seqs)]
            rngs = [np.random.default_rng(_seeds(decoding.seed, prompts[s // n], s % n)) for s in range(seqs)]
            penalised = decoding.repetition_penalty != 1.0
            seen = [set(prompts[s // n]) for s in range(seqs)] if penalised else None
            logits = {s: first[s // n] for s in range(seqs)}
            live = list(range(seqs))
            while live:
                step = []
                for s in live:
                    scores = _process(logits[s], np.fromiter(seen[s], dtype=np.int64) if penalised else None,
                                      decoding)
                    greedy = not decoding.do_sample or (greedy_first and s % n == 0)
                    tok = int(np.argmax(scores)) if greedy else sample(scores, decoding, rngs[s])
                    out[s].append(tok)
                    if penalised:
                        seen[s].add(tok)
                    ended = on_token(s, tok) if on_token is not None else False
                    if ended or tok in stop_set or len(out[s]) >= decoding.max_new_tokens:
                        lib.llama_memory_seq_rm(mem, s, -1, -1)  # its own cells; shared ones stay for the others
                    else:
                        step.append(s)
                live = step
                if live:
                    rows = self._decode(ctx, batch, [(out[s][-1], len(prompts[s // n]) + len(out[s]) - 1, s, True)
                                                     for s in live])
                    logits = dict(zip(live, rows))
        finally:
            lib.llama_batch_free(batch)
        return [out[p * n:(p + 1) * n] for p in range(len(prompts))]

    def batches(self, batches, *, stop: Sequence[int], decoding, n: int = 1
                ) -> Iterator[tuple[list[int], list]]:
        """``(row indices, new token ids per row)`` for each ``(row indices, prompt ids)`` batch, as
        ``covertune.generation.engines.generate_batches`` yields them (``n == 1``), or with ``n`` candidates per row."""
        limit = max(1, self.lib.llama_max_parallel_sequences() // n)
        for indices, rows in batches:
            for s in range(0, len(rows), limit):
                groups = self.generate(rows[s:s + limit], n, decoding, stop, greedy_first=n > 1)
                yield list(indices[s:s + limit]), [g[0] for g in groups] if n == 1 else groups

    def close(self) -> None:
        self._free_context()
        if getattr(self, "_model", None):
            self.lib.llama_model_free(self._model)
            self._model = None

    def _free_context(self) -> None:
        if getattr(self, "_ctx", None):
            self.lib.llama_free(self._ctx)
            self._ctx = None
            self._ctx_size = (0, 0)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def eval(self):  # as a torch model, for callers that put a model in eval mode
        return self
