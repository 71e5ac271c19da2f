"""covertune's own routes: ``POST /v1/cover-letter``, ``GET /health``, ``GET /metrics``.

``/v1/cover-letter`` takes the 8 input fields by their record names and answers ``{letter, grounding,
usage, model}``; ``grounding`` is the evaluate stage's per-letter check (``ground_json``). With
``"stream": true`` it answers server-sent events: ``{"type": "delta", "text"}`` as the letter grows (their
texts concatenate to the letter), one ``{"type": "done", letter, grounding, usage, model}``, then
``[DONE]``; an error after streaming began is ``{"type": "error", "error": {"message"}}``.
``"candidates": N`` (default ``--candidates``, the recipe's) writes the greedy letter and N-1 samples in one
batch and answers the one ``"select"`` chooses (greedy, mbr, grounded-mbr, classifier-mbr when the server
loaded a letter-quality classifier; default ``--select``), with every candidate, its grounding failures and
MBR score under ``candidates``; ``"form"`` (auto, full, body; default ``--form``) shapes the letter
(covertune.generation.letter_form). Streamed with candidates or a form other than auto: ``{"type": "progress", "done",
"total"}`` as each candidate is written, then the chosen letter as one delta, done and ``[DONE]``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from covertune.metrics.grounding import ground_json
from covertune.serve.chosen import ChosenTicket, check_form, check_select, chosen_events, submit
from covertune.serve.common import SSE_HEADERS, parse, read_json, results_unless_gone, sse, usage
from covertune.serve.engine import GenerationFailed
from covertune.serve.errors import APIError
from covertune.serve.schemas import CoverLetterRequest

log = logging.getLogger(__name__)
router = APIRouter()


def longest(fields: dict[str, str]) -> str:
    """The field to shorten when the prompt is too long: the longest one."""
    return max(fields, key=lambda k: len(fields[k]))


def _engine(request: Request):
    return request.app.state.engine


@router.get("/health")
async def health(request: Request):
    return {"status": "ok", "model": _engine(request).name}


@router.get("/metrics")
async def metrics(request: Request):
    engine = _engine(request)
    return PlainTextResponse(engine.metrics.render(engine.batcher.waiting(), engine.batcher.busy),
                             media_type="text/plain; version=0.0.4")


@router.post("/v1/cover-letter")
async def cover_letter(request: Request):
    engine = _engine(request)
    req = parse(CoverLetterRequest, await read_json(request, engine.cfg.max_body_bytes))
    engine.check_model(req.model)
    fields = req.fields()
    for name, value in fields.items():
        engine.check_length(name, value)
    n = req.candidates or engine.cfg.candidates
    form = check_form(req.form or engine.cfg.form)
    if n > 1 or form != "auto":
        return await _chosen(request, engine, req, fields, n, form)
    decoding = engine.decoding(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.seed,
                               req.repetition_penalty)
    ids = engine.fields_ids(fields)
    engine.check_context(ids, decoding, longest(fields))
    ticket = engine.submit(ids, decoding, stream=req.stream)

    def final(result) -> dict:
        return {"letter": result.letter, "grounding": ground_json(result.letter, fields),
                "usage": usage(result), "model": engine.name, "form": form}

    if not req.stream:
        try:
            return final((await results_unless_gone(request, [ticket]))[0])
        except GenerationFailed as e:
            raise APIError(500, str(e)) from None

    async def events():
        try:
            async for kind, payload in ticket.events():
                if kind == "delta":
                    yield sse({"type": "delta", "text": payload})
                else:
                    yield sse({"type": "done", **final(payload)})
            yield sse("[DONE]")
        except GenerationFailed as e:
            yield sse({"type": "error", "error": {"message": str(e)}})
        finally:
            ticket.cancel()  # a client gone mid-letter frees its batch row

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _chosen(request: Request, engine, req: CoverLetterRequest, fields: dict[str, str], n: int, form: str):
    """The letter chosen among ``n`` candidates (covertune.generation.select) and given its ``form``, with every
    candidate under "candidates" (n > 1). Streamed: a progress event per candidate written, then the
    letter as a delta, then done."""
    if n > 1:
        check_select(engine, n, req.select or engine.cfg.select)
        decoding = engine.candidate_decoding(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.seed,
                                             req.repetition_penalty)
    else:
        decoding = engine.decoding(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.seed,
                                   req.repetition_penalty)
    ids = engine.fields_ids(fields)
    engine.check_context(ids, decoding, longest(fields))
    tickets = submit(engine, ids, n, decoding)
    select = req.select or engine.cfg.select

    def final(chosen) -> dict:
        out = {"letter": chosen.letter, "grounding": ground_json(chosen.letter, fields), "usage": usage(chosen),
               "model": engine.name, "form": form}
        if chosen.record is not None:
            out["candidates"] = chosen.record
        return out

    if not req.stream:  # a client gone before its letter stops the candidates (results_unless_gone)
        try:
            return final((await results_unless_gone(request, [ChosenTicket(engine, tickets, fields, select, form)]))[0])
        except GenerationFailed as e:
            raise APIError(500, str(e)) from None
    letters = chosen_events(engine, tickets, fields, select, form)

    async def events():
        try:
            async for kind, *payload in letters:
                if kind == "progress":
                    yield sse({"type": "progress", "done": payload[0], "total": payload[1]})
                else:
                    if payload[0].letter:
                        yield sse({"type": "delta", "text": payload[0].letter})
                    yield sse({"type": "done", **final(payload[0])})
            yield sse("[DONE]")
        except GenerationFailed as e:
            yield sse({"type": "error", "error": {"message": str(e)}})
        finally:
            await letters.aclose()  # a client gone mid-letter frees the batch rows

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
