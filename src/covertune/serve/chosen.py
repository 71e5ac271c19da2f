"""The letter a request gets when it is chosen or shaped after it is written: its candidates (the greedy
letter and N-1 samples in one batch, one chosen by covertune.generation.select, as ``covertune generate`` chooses), and
its form (covertune.generation.letter_form). ``chosen_events`` yields ``("progress", done, total)`` as each candidate
is written, then ``("done", Chosen)``; every route (``/v1/cover-letter``, OpenAI's and Ollama's) sends the
chosen letter in its own shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from covertune.serve.errors import APIError


@dataclass
class Chosen:
    """The letter sent, with what ``covertune.serve.common.usage`` and the routes read of a result."""

    letter: str
    prompt_tokens: int
    completion_tokens: int  # every candidate's
    finish_reason: str
    record: dict | None  # the choice with every candidate (covertune.generation.select.Choice.record); None for one letter


def check_select(engine, n: int, select: str, field: str = "select") -> None:
    """A request's candidates and select, checked against what this server can do (422 naming the field)."""
    from covertune.generation.select import SELECT_MODES

    if select not in SELECT_MODES:
        raise APIError(422, f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}", field)
    if n > 1 and select == "classifier-mbr" and getattr(engine, "classifier", None) is None:
        raise APIError(422, "select classifier-mbr needs a letter-quality classifier and this server has none "
                       "(start it with --classifier); choose greedy, mbr or grounded-mbr", field)
    if n > engine.cfg.max_batch_size:
        raise APIError(422, f"candidates is {n}; this server writes at most {engine.cfg.max_batch_size} "
                       "(--max-batch-size) together", "candidates")


def check_form(form: str) -> str:
    from covertune.generation.letter_form import FORMS

    if form not in FORMS:
        raise APIError(422, f"form must be one of {', '.join(FORMS)}, got {form!r}", "form")
    return form


def submit(engine, ids: list[int], n: int, decoding) -> list:
    """The tickets of a letter's ``n`` candidates (one batch), or of the one letter; ``decoding``: the
    candidates' sampling (``Engine.candidate_decoding``) when n > 1, else the letter's own."""
    return engine.submit_candidates(ids, decoding, n) if n > 1 else [engine.submit(ids, decoding, stream=False)]


async def chosen_events(engine, tickets: list, fields: dict[str, str] | None, select: str, form: str):
    """("progress", done, total) per finished candidate (with several), then ("done", Chosen)."""
    from covertune.generation.letter_form import apply_form

    n = len(tickets)
    pending = {asyncio.ensure_future(t.result()): k for k, t in enumerate(tickets)}
    results: list = [None] * n
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                results[pending.pop(task)] = task.result()  # a GenerationFailed goes to the route
            if n > 1:
                yield "progress", sum(r is not None for r in results), n
    finally:
        for task in pending:
            task.cancel()
        for t in tickets:
            t.cancel()
    letters = [r.letter for r in results]
    record, index = None, 0
    if n > 1:
        from covertune.generation.select import choose

        classifier = getattr(engine, "classifier", None)
        quality = classifier.score(letters, [fields] * n) if classifier is not None and fields else None
        choice = choose(letters, select, fields, quality, engine.cfg.classifier_threshold,
                        engine.cfg.select_repetition_weight, skills_weight=engine.cfg.select_skills_weight)
        index, record = choice.index, choice.record([r.completion_tokens for r in results])
    letter = apply_form(letters[index], form, fields) if fields is not None else letters[index]
    yield "done", Chosen(letter, results[0].prompt_tokens, sum(r.completion_tokens for r in results),
                         results[index].finish_reason, record)


class ChosenTicket:
    """A chosen letter seen as a ``covertune.serve.engine.Ticket`` (``events``, ``result``, ``cancel``), for
    the OpenAI and Ollama routes: their streams keep their shapes and carry the chosen letter as one piece."""

    def __init__(self, engine, tickets: list, fields: dict[str, str], select: str, form: str):
        self.tickets = tickets
        self._events = chosen_events(engine, tickets, fields, select, form)

    async def events(self):
        async for kind, *payload in self._events:
            if kind == "done":
                if payload[0].letter:
                    yield "delta", payload[0].letter
                yield "done", payload[0]
                return

    async def result(self) -> Chosen:
        async for kind, payload in self.events():
            if kind == "done":
                return payload
        raise RuntimeError("no letter was chosen")

    def cancel(self) -> None:
        for t in self.tickets:
            t.cancel()


def letter_ticket(engine, ids: list[int], fields: dict[str, str] | None, decoding_args: dict, stream: bool):
    """For the OpenAI and Ollama routes: a message of the 8 fields gets the server's recipe (``--candidates``,
    ``--select``, ``--form``) as /v1/cover-letter does; other text, or a server of one candidate in form auto,
    the plain ticket."""
    cfg = engine.cfg
    if fields is None or (cfg.candidates <= 1 and cfg.form == "auto"):
        decoding = engine.decoding(**decoding_args)
        return engine.submit(ids, decoding, stream=stream), decoding
    decoding = engine.candidate_decoding(**decoding_args) if cfg.candidates > 1 else engine.decoding(**decoding_args)
    return ChosenTicket(engine, submit(engine, ids, cfg.candidates, decoding), fields, cfg.select, cfg.form), decoding
