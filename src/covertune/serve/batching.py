"""Dynamic batching: one worker thread owns the model and generates queued requests together.

The worker takes the oldest waiting request, then keeps taking requests for ``window_s`` (or until
``max_batch_size``) and generates them as one left-padded batch with ``covertune.generation.decoding.generate_batch``,
the function ``covertune generate`` uses. Only requests with the same decoding settings share a batch:
greedy requests batch together (each with its own ``max_new_tokens``: greedy tokens do not depend on how
long the batch runs); a sampling request is generated alone, seeded, so its letter depends only on its
own settings; the candidates of one request (``group``) are generated together, the greedy one as is and
each sampled one from its own seed (``row_seed``, covertune.generation.seeded_sampling), so they are the candidates
``covertune generate`` writes for the same prompt. Requests that do not fit the current batch wait, first in line, for the
next one.

A ``BatchTracker`` receives each step's new tokens for the whole batch: it hands each row's tokens to its
job (streaming jobs get their text as it grows), finishes a job as soon as its row emits a stop token or
reaches its own ``max_new_tokens``, and tells the decoder to stop rows that are finished or whose client
went away (torch: through transformers' streamer and stopping criterion, covertune.serve.torch_hooks;
llama.cpp: through the return value of ``token``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from covertune.core.prompt import COVER_LETTER_HEADER, INSTRUCTION, extract_letter
from covertune.generation.decoding import Decoding, check_pad, cut_at_stop, generate_batch, stop_token_ids

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The batcher's queue holds its maximum of waiting requests."""


@dataclass
class Result:
    letter: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens reached)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(eq=False)
class Job:
    """One letter to generate. ``emit(kind, payload)`` is called from the worker thread with
    ("delta", str) for streaming jobs, then ("done", Result) or ("error", str)."""

    ids: list[int]
    decoding: Decoding
    emit: Callable[[str, object], None]
    stream: bool = False
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    group: list | None = field(default=None, repr=False)  # the candidate jobs of one request, batched together
    row_seed: int | None = None  # a sampled candidate's own seed (covertune.generation.seeded_sampling); None: greedy

    def batch_key(self):
        """Jobs with equal keys may share a batch (None: never shared)."""
        if self.group is not None:
            return ("candidates", id(self.group))
        if self.decoding.do_sample:
            return None
        return ("greedy", self.decoding.repetition_penalty)


class LetterText:
    """The letter of a growing output, as ``extract_letter`` gives it at the end, released only in pieces
    that the end result will start with: held back are white space at the end, an incomplete UTF-8
    character, and text that may still turn out to be the prompt's instruction sentence or header.
    (A header the model writes after letter text has been released makes ``extract_letter`` drop that
    text: the final letter then does not extend what was released; see ``Batcher`` users.)"""

    def __init__(self):
        self.sent = ""

    def delta(self, output: str, final: bool = False) -> str:
        letter = extract_letter(output)
        if not final:
            letter = letter.rstrip("\ufffd")
            body = output[output.find(COVER_LETTER_HEADER) + len(COVER_LETTER_HEADER):] \
                if COVER_LETTER_HEADER in output else output
            window = len(INSTRUCTION) + 8
            if len(body) < window and any(INSTRUCTION.startswith(body[k:]) for k in range(min(9, len(body) + 1))):
                return ""  # the instruction sentence may still be forming at the start
            for n in range(len(COVER_LETTER_HEADER) - 1, 0, -1):  # a header may be forming at the end
                if letter.endswith(COVER_LETTER_HEADER[:n]):
                    letter = letter[:-n]
                    break
        if not letter.startswith(self.sent):
            return ""
        piece = letter[len(self.sent):]
        self.sent = letter
        return piece


class BatchTracker:
    """Per-row bookkeeping of one batch's decoding (see the module docstring)."""

    def __init__(self, jobs: Sequence[Job], tokenizer, stop_ids: Sequence[int], prompt_width: int):
        self.jobs = list(jobs)
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.prompt_width = prompt_width
        self.rows: list[list[int]] = [[] for _ in jobs]
        self.finished = [False] * len(jobs)
        self.texts = [LetterText() for _ in jobs]

    def token(self, i: int, token: int) -> bool:
        """Row ``i``'s next token: kept, streamed, and the row finished at a stop token or its own
        ``max_new_tokens``. True when the row needs no more tokens (finished, or its client went away)."""
        if self.finished[i]:
            return True
        job = self.jobs[i]
        self.rows[i].append(token)
        if token in self.stop_ids or len(self.rows[i]) >= job.decoding.max_new_tokens:
            self.finish(i, self.rows[i])
        elif job.stream and not job.cancelled:
            piece = self.texts[i].delta(self.tokenizer.decode(self.rows[i], skip_special_tokens=True))
            if piece:
                job.emit("delta", piece)
        return self.finished[i] or job.cancelled

    def finish(self, i: int, ids: list[int]) -> None:
        """Hand row ``i`` its result (once)."""
        if self.finished[i]:
            return
        self.finished[i] = True
        job = self.jobs[i]
        ids = cut_at_stop(ids, list(self.stop_ids))[:job.decoding.max_new_tokens]
        output = self.tokenizer.decode(ids, skip_special_tokens=True)
        letter = extract_letter(output)
        if job.stream and not job.cancelled:
            piece = self.texts[i].delta(output, final=True)
            if piece:
                job.emit("delta", piece)
            if self.texts[i].sent != letter:
                log.warning("the streamed text of a letter was not a prefix of its final text (the model "
                            "wrote the prompt's header after the letter began); the done event holds the letter")
        reason = "stop" if ids and ids[-1] in self.stop_ids else "length"
        job.emit("done", Result(letter, ids, len(job.ids), reason))


class Batcher:
    """The model's single worker: ``submit`` jobs from any thread; ``start``/``stop`` the worker."""

    def __init__(self, model, tokenizer, max_batch_size: int = 8, window_s: float = 0.02, max_queue: int = 64,
                 on_batch: Callable[[int, int, float], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or window_s < 0:
            raise ValueError("max_batch_size and max_queue must be at least 1, batch_window_ms at least 0")
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.pad_id = check_pad(tokenizer, self.stop_ids)
        self.max_batch_size, self.window_s = max_batch_size, window_s
        self.on_batch = on_batch  # (rows, new tokens, seconds) after each batch
        self.max_queue = max_queue
        self._queue: queue.Queue[Job] = queue.Queue()
        self._held: list[Job] = []  # taken from the queue, waiting for a batch with their settings
        self._waiting = 0  # submitted and not yet in a batch: in the queue or held (the --max-queue bound)
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy = False

    def submit(self, job: Job) -> None:
        if self._stopping.is_set():
            raise QueueFull("the server is shutting down")
        with self._count_lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self.max_queue} sequences are waiting (a letter's candidates count one each)")
            self._waiting += 1
        self._queue.put_nowait(job)

    def waiting(self) -> int:
        return self._waiting

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="covertune-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish every job already submitted, then end the worker."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------ worker

    def _next(self, timeout: float) -> Job | None:
        if self._held:
            return self._held.pop(0)
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def _take_batch(self) -> list[Job]:
        """The next batch; its jobs stop counting against ``max_queue``."""
        batch = self._gather()
        with self._count_lock:
            self._waiting -= len(batch)
        return batch

    def _gather(self) -> list[Job]:
        first = self._next(0.1)
        if first is None:
            return []
        key = first.batch_key()
        batch = [first]
        if key is None:
            return batch
        # waiting jobs with the same settings join first, then new arrivals within the window
        keep = []
        for job in self._held:
            (batch if job.batch_key() == key and len(batch) < self.max_batch_size else keep).append(job)
        self._held = keep
        target, wait = self.max_batch_size, self.window_s
        if first.group is not None:  # its candidates, submitted together: the batch waits for all of them
            target, wait = min(len(first.group), self.max_batch_size), max(self.window_s, 5.0)
        deadline = time.perf_counter() + wait
        while len(batch) < target:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                job = self._queue.get(timeout=left)
            except queue.Empty:
                break
            (batch if job.batch_key() == key else self._held).append(job)
        return batch

    def _work(self) -> None:
        while True:
            batch = [j for j in self._take_batch() if not j.cancelled]
            if not batch:
                if self._stopping.is_set() and self.waiting() == 0:
                    return
                continue
            self.busy = True
            try:
                self._run(batch)
            except Exception as e:  # a failed batch fails its requests, never the server
                log.exception("generation failed for a batch of %d: %s", len(batch), e)
                for job in batch:
                    job.emit("error", f"generation failed ({type(e).__name__}); the server log has the cause")
            finally:
                self.busy = False

    def _run(self, batch: list[Job]) -> None:
        t0 = time.perf_counter()
        decoding = replace(batch[0].decoding, max_new_tokens=max(j.decoding.max_new_tokens for j in batch))
        width = max(len(j.ids) for j in batch)
        tracker = BatchTracker(batch, self.tokenizer, self.stop_ids, width)
        if getattr(self.model, "is_llamacpp", False):
            self._run_llamacpp(batch, decoding, tracker)
        else:
            self._run_torch(batch, decoding, tracker)
        if self.on_batch is not None:
            self.on_batch(len(batch), sum(len(r) for r in tracker.rows), time.perf_counter() - t0)

    def _run_llamacpp(self, batch: list[Job], decoding: Decoding, tracker: BatchTracker) -> None:
        """The batch in the llama.cpp engine (covertune.generation.llamacpp_engine): a request's candidates
        as one prompt's N sequences sharing its cache (candidate k is sequence k, seeded as ``covertune
        generate --engine llama.cpp`` seeds it; 0 greedy), greedy requests as one batch of prompts, a
        sampled request alone; each token goes through the tracker as it is decoded."""
        if batch[0].group is not None:
            group = batch[0].group
            row = {group.index(j): i for i, j in enumerate(batch)}  # candidate number -> row of the batch
            self.model.generate([batch[0].ids], max(row) + 1, decoding, sorted(self.stop_ids), greedy_first=True,
                                on_token=lambda s, tok: tracker.token(row[s], tok) if s in row else True)
        else:
            self.model.generate([j.ids for j in batch], 1, decoding, sorted(self.stop_ids),
                                greedy_first=False, on_token=tracker.token)
        for i, row_ids in enumerate(tracker.rows):  # rows the tracker did not finish (cancelled ones)
            tracker.finish(i, row_ids)

    def _run_torch(self, batch: list[Job], decoding: Decoding, tracker: BatchTracker) -> None:
        from covertune.serve.torch_hooks import TrackerHooks  # torch and transformers: only for a torch model

        extra = TrackerHooks(tracker).generate_kwargs()
        if batch[0].group is not None:  # candidates: each sampled row draws from its own seed, the rest greedy
            from transformers import LogitsProcessorList

            from covertune.generation.seeded_sampling import RowSampler

            extra["logits_processor"] = LogitsProcessorList([RowSampler(
                [j.row_seed for j in batch], decoding.temperature, decoding.top_k, decoding.top_p)])
            decoding = replace(decoding, do_sample=False)
        elif decoding.do_sample:
            from transformers import set_seed

            set_seed(decoding.seed)
        rows = generate_batch(self.model, [j.ids for j in batch], decoding, self.stop_ids, self.pad_id, **extra)
        for i, row in enumerate(rows):  # rows the tracker did not finish (cancelled ones)
            tracker.finish(i, row)
