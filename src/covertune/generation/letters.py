"""Letters for many prompts: batches grouped by length through an engine (covertune.generation.engines),
decoded and extracted, with a resume journal of finished rows (``Journal``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

from covertune.core import io
from covertune.core.progress import progress_bar
from covertune.core.prompt import extract_letter
from covertune.generation.decoding import Decoding, check_pad, stop_token_ids

log = logging.getLogger(__name__)


def candidates_path(out: str | os.PathLike, split: str, which: str) -> Path:
    """With --candidates: every letter's candidates, their grounding failures and MBR scores, the choice."""
    return Path(out) / "candidates" / f"{split}.{which}.jsonl"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ids_sha(ids: Sequence[int]) -> str:
    """The journal's key of a prompt: a hash of the token ids fed."""
    return _sha(",".join(str(int(i)) for i in ids))


def settings_hash(settings: dict) -> str:
    return _sha(json.dumps(settings, sort_keys=True, default=str))[:16]


def part_path(path: Path, rank: int) -> Path:
    """The journal part of process ``rank`` beside the journal ``path`` (several processes)."""
    return path.with_name(f"{path.stem}.part{rank}{path.suffix}")


def merge_parts(path: Path, settings: dict, fresh: bool = False) -> int:
    """The rows of the journal parts beside ``path`` (written by the processes of a multi-process run,
    finished or interrupted) appended to the journal ``path``, and the parts removed; ``fresh``: the
    journal and the parts start empty. The number of rows taken from the parts."""
    parts = sorted(path.parent.glob(f"{path.stem}.part*{path.suffix}"))
    taken = 0
    with Journal(path, settings, fresh=fresh) as journal:
        for part in parts:
            rows = [] if fresh else list(Journal(part, settings, readonly=True).rows.values())
            journal.append(rows)
            taken += len(rows)
    for part in parts:
        part.unlink()
    return taken


class Journal:
    """Append-only record of finished rows, ``{"index", "output", "new_tokens", "prompt_sha"}`` per line
    (``prompt_sha``: ``ids_sha`` of the prompt's token ids),
    after a header line holding the hash of the settings that shape outputs. A journal with another hash
    (a changed model, adapter, prompt format or decoding setting) is discarded and started fresh; a row
    whose prompt changed is generated again. ``readonly``: the rows are read, the file is left as it is
    (another process may be writing it)."""

    def __init__(self, path: str | os.PathLike, settings: dict, fresh: bool = False, readonly: bool = False):
        self.path = Path(path)
        self.settings = settings
        self.key = settings_hash(settings)
        self.rows: dict[int, dict] = {}
        self._file = None
        if self.path.exists() and not fresh:
            self._load()
        if readonly:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # rewrite cleanly (drops a line cut off by a crash, or a stale journal), then append to it
        header = {"settings_hash": self.key, "settings": settings}
        io.write_jsonl(self.path, [header, *(self.rows[i] for i in sorted(self.rows))])
        self._file = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if header.get("settings_hash") != self.key:
            log.info("%s was written with other settings; starting it afresh", self.path)
            return
        for line in lines[1:]:
            try:
                row = json.loads(line)
                self.rows[int(row["index"])] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut off by a crash: that row is generated again

    def lookup(self, index: int, ids: Sequence[int]) -> dict | None:
        row = self.rows.get(index)
        return row if row is not None and row.get("prompt_sha") == ids_sha(ids) else None

    def append(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.rows[int(row["index"])] = row
            self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def generate_token_ids(model, tokenizer, inputs: Sequence[Sequence[int]], batch_size: int = 32,
                       decoding: Decoding = Decoding(), indices: Sequence[int] | None = None,
                       engine: str = "plain"
                       ) -> Iterator[tuple[list[int], list[list[int]]]]:
    """Yield ``(row indices, new token ids per row)`` batch by batch for ``inputs[indices]``.

    ``inputs`` are prompts as token ids (``covertune.core.prompt.prompt_ids``). Rows are grouped by length
    (longest first, so a batch that does not fit in memory fails at once), left-padded, and cut after
    their first stop token (which is kept); padding after it is not. ``engine`` (covertune.generation.engines)
    decides how the batches are decoded: plain, static, continuous or auto."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    llamacpp = getattr(model, "is_llamacpp", False)  # covertune.generation.llamacpp_engine decodes its own batches
    if not llamacpp:
        from covertune.generation import engines  # torch's engines: not imported for a llama.cpp model

        engine = engines.resolve(engine, model, decoding)
    stop = stop_token_ids(tokenizer, model)
    pad = check_pad(tokenizer, stop)
    indices = list(range(len(inputs))) if indices is None else list(indices)
    if not indices:
        return
    order = sorted(indices, key=lambda i: (-len(inputs[i]), i))
    batches = ((order[s:s + batch_size], [list(inputs[i]) for i in order[s:s + batch_size]])
               for s in range(0, len(order), batch_size))
    if llamacpp:
        yield from model.batches(batches, stop=stop, decoding=decoding)
        return
    yield from engines.generate_batches(model, batches, engine=engine, stop=stop, pad=pad, decoding=decoding,
                                        batch_size=batch_size, max_prompt_tokens=len(inputs[order[0]]))


def generate_letters(model, tokenizer, inputs: Sequence[Sequence[int]], batch_size: int = 32,
                     decoding: Decoding = Decoding(), *, journal: Journal | None = None,
                     stats: dict | None = None, progress: bool = True, desc: str = "letters",
                     engine: str = "plain", indices: Sequence[int] | None = None) -> list[str]:
    """The letter for every prompt (decoded new tokens, special tokens skipped, extract_letter applied).

    ``inputs`` are prompts as token ids (``covertune.core.prompt.prompt_ids``), decoded as ``decoding`` says.
    With a ``journal``, rows it holds are not generated again and each finished batch is appended to it.
    ``stats``, if given, receives letters, resumed, new_tokens and seconds of this call.
    ``engine``: how batches are decoded (covertune.generation.engines: plain, static, continuous, auto).
    ``indices``: the rows to write (default all); the others are left None (another process's share)."""

    letters: list[str | None] = [None] * len(inputs)
    if journal is not None:
        for i, ids in enumerate(inputs):
            row = journal.lookup(i, ids)
            if row is not None:
                letters[i] = row["output"]
    wanted = range(len(inputs)) if indices is None else indices
    pending = [i for i in wanted if letters[i] is None]
    if decoding.do_sample and pending and not getattr(model, "is_llamacpp", False):  # llama.cpp: its own seed
        from transformers import set_seed

        set_seed(decoding.seed)
    done_letters, done_tokens, t0 = 0, 0, time.perf_counter()
    bar = progress_bar(total=len(wanted), initial=len(wanted) - len(pending), desc=desc, unit="letter",
                       disable=not progress)
    try:
        for batch, rows in generate_token_ids(model, tokenizer, inputs, batch_size, decoding, pending,
                                              engine=engine):
            records = []
            for i, ids in zip(batch, rows):
                letters[i] = extract_letter(tokenizer.decode(ids, skip_special_tokens=True))
                records.append({"index": i, "output": letters[i], "new_tokens": len(ids),
                                "prompt_sha": ids_sha(inputs[i])})
                done_tokens += len(ids)
            if journal is not None:
                journal.append(records)
            elapsed = max(time.perf_counter() - t0, 1e-9)
            done_letters += len(batch)
            bar.update(len(batch))
            bar.set_postfix({"letters/s": f"{done_letters / elapsed:.2f}",
                             "tok/s": f"{done_tokens / elapsed:.0f}"})
    finally:
        bar.close()
        if stats is not None:
            stats.update(letters=done_letters,
                         resumed=len(wanted) - len(pending), new_tokens=done_tokens,
                         seconds=round(time.perf_counter() - t0, 3))
    return letters  # type: ignore[return-value]
