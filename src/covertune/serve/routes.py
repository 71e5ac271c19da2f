"""covertune's own routes: ``POST /v1/cover-letter``, ``GET /health``, ``GET /metrics``.

``/v1/cover-letter`` takes the 8 input fields by their record names and answers ``{letter, grounding,
usage, model}``; ``grounding`` is the evaluate stage's per-letter check (``ground_json``). With
``"stream": true`` it answers server-sent events: ``{"type": "delta", "text"}`` as the letter grows (their
texts concatenate to the letter), one ``{"type": "done", letter, grounding, usage, model}``, then
``[DONE]``; an error after streaming began is ``{"type": "error", "error": {"message"}}``.
``"candidates": N`` (default ``--candidates``) writes the greedy letter and N-1 samples in one batch and
answers the one ``"select"`` chooses (greedy, mbr, grounded-mbr, classifier-mbr when the server loaded a
letter-quality classifier; default ``--select``), with every
candidate, its grounding failures and MBR score under ``candidates``; not with ``"stream": true``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from covertune.metrics.grounding import ground_json
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
    if n > 1:
        return await _candidates(request, engine, req, fields, n)
    decoding = engine.decoding(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.seed,
                               req.repetition_penalty)
    ids = engine.fields_ids(fields)
    engine.check_context(ids, decoding, longest(fields))
    ticket = engine.submit(ids, decoding, stream=req.stream)

    def final(result) -> dict:
        return {"letter": result.letter, "grounding": ground_json(result.letter, fields),
                "usage": usage(result), "model": engine.name}

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


async def _candidates(request: Request, engine, req: CoverLetterRequest, fields: dict[str, str], n: int) -> dict:
    """The letter chosen among ``n`` candidates (covertune.select), with every candidate under "candidates"."""
    from covertune.select import SELECT_MODES, choose

    select = req.select or engine.cfg.select
    if select not in SELECT_MODES:
        raise APIError(422, f"select must be one of {', '.join(SELECT_MODES)}, got {select!r}", "select")
    classifier = getattr(engine, "classifier", None)
    if select == "classifier-mbr" and classifier is None:
        raise APIError(422, "select classifier-mbr needs a letter-quality classifier and this server has none "
                       "(start it with --classifier); choose greedy, mbr or grounded-mbr", "select")
    if n > engine.cfg.max_batch_size:
        raise APIError(422, f"candidates is {n}; this server writes at most {engine.cfg.max_batch_size} "
                       "(--max-batch-size) together", "candidates")
    if req.stream:
        raise APIError(422, "stream cannot be combined with candidates above 1: the letter is chosen once every "
                       "candidate is written", "stream")
    decoding = engine.candidate_decoding(req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.seed,
                                         req.repetition_penalty)
    ids = engine.fields_ids(fields)
    engine.check_context(ids, decoding, longest(fields))
    tickets = engine.submit_candidates(ids, decoding, n)
    try:
        results = await results_unless_gone(request, tickets)
    except GenerationFailed as e:
        raise APIError(500, str(e)) from None
    finally:
        for t in tickets:
            t.cancel()
    letters = [r.letter for r in results]
    quality = classifier.score(letters, [fields] * len(letters)) if classifier is not None else None
    choice = choose(letters, select, fields, quality, engine.cfg.classifier_threshold,
                    engine.cfg.select_repetition_weight)
    prompt_tokens = results[0].prompt_tokens
    completion = sum(r.completion_tokens for r in results)
    return {"letter": choice.letter, "grounding": ground_json(choice.letter, fields),
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion},
            "model": engine.name, "candidates": choice.record([r.completion_tokens for r in results])}
