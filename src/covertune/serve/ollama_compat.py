"""Ollama-compatible routes: ``POST /api/generate``, ``POST /api/chat``, ``GET /api/tags``, ``GET /api/version``.

As Ollama: ``stream`` defaults to true and streams newline-delimited JSON objects
(``application/x-ndjson``), each with ``done: false`` and a piece of text (``response`` for generate,
``message.content`` for chat), then one ``done: true`` object with ``done_reason`` and the counts and
durations (nanoseconds); ``stream: false`` answers that object alone with the whole text. Errors are
``{"error": "message"}``. ``options.num_predict``, ``temperature``, ``top_p``, ``top_k``, ``seed`` and
``repeat_penalty`` are honoured; unlike Ollama (temperature 0.8), decoding is greedy unless a temperature
above 0 is given. ``system`` prompts are not fed to the model. The prompt (or the last user message) maps
to a letter as ``covertune.serve.engine.message_fields`` says; one of the 8 fields gets the server's recipe,
candidates and form, as /v1/cover-letter does (its chosen letter streamed as one piece).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from covertune.serve.chosen import letter_ticket
from covertune.serve.common import parse, read_json, results_unless_gone
from covertune.serve.engine import GenerationFailed
from covertune.serve.errors import APIError
from covertune.serve.openai_compat import last_user_text, message_ids
from covertune.serve.schemas import OllamaChatRequest, OllamaGenerateRequest

router = APIRouter()
OLLAMA_VERSION = "0.5.0"  # the API version these routes follow


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _line(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _param_size(n: int) -> str:
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _decoding_args(options) -> dict:
    n = options.num_predict if options.num_predict and options.num_predict > 0 else None
    return dict(max_new_tokens=n, temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
                seed=options.seed, repetition_penalty=options.repeat_penalty)


async def _respond(request, engine, ticket, stream: bool, piece, t0: float):
    """The NDJSON stream or the single object; ``piece(text)`` is the route's text field(s)."""
    def final(result) -> dict:
        total = time.perf_counter_ns() - t0
        return {"model": engine.name, "created_at": _now(), **piece("" if stream else result.letter),
                "done": True, "done_reason": result.finish_reason, "total_duration": total, "load_duration": 0,
                "prompt_eval_count": result.prompt_tokens, "eval_count": result.completion_tokens}

    if not stream:
        try:
            return final((await results_unless_gone(request, [ticket]))[0])
        except GenerationFailed as e:
            raise APIError(500, str(e)) from None

    async def lines():
        try:
            async for kind, payload in ticket.events():
                if kind == "delta":
                    yield _line({"model": engine.name, "created_at": _now(), **piece(payload), "done": False})
                else:
                    yield _line(final(payload))
        except GenerationFailed as e:
            yield _line({"error": str(e)})
        finally:
            ticket.cancel()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/api/generate")
async def generate(request: Request):
    engine, t0 = request.app.state.engine, time.perf_counter_ns()
    req = parse(OllamaGenerateRequest, await read_json(request, engine.cfg.max_body_bytes))
    engine.check_model(req.model)
    engine.check_length("prompt", req.prompt)
    if not req.prompt.strip():
        # Ollama loads the model and answers done for an empty prompt; here the model is always loaded
        return {"model": engine.name, "created_at": _now(), "response": "", "done": True, "done_reason": "load"}
    args = _decoding_args(req.options)
    decoding = engine.decoding(**args)
    ids, fields = message_ids(engine, req.prompt)
    engine.check_context(ids, decoding, "prompt", "options.num_predict")
    ticket, _ = letter_ticket(engine, ids, fields, args, stream=req.stream)
    return await _respond(request, engine, ticket, req.stream, lambda text: {"response": text}, t0)


@router.post("/api/chat")
async def chat(request: Request):
    engine, t0 = request.app.state.engine, time.perf_counter_ns()
    req = parse(OllamaChatRequest, await read_json(request, engine.cfg.max_body_bytes))
    engine.check_model(req.model)
    text = last_user_text(req.messages, engine)
    args = _decoding_args(req.options)
    decoding = engine.decoding(**args)
    ids, fields = message_ids(engine, text)
    engine.check_context(ids, decoding, "messages", "options.num_predict")
    ticket, _ = letter_ticket(engine, ids, fields, args, stream=req.stream)
    return await _respond(request, engine, ticket, req.stream,
                          lambda text: {"message": {"role": "assistant", "content": text}}, t0)


@router.get("/api/tags")
async def tags(request: Request):
    engine = request.app.state.engine
    model = engine.lm.model
    params = sum(p.numel() for p in model.parameters())
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    family = getattr(model.config, "model_type", "") or ""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    modified = datetime.fromtimestamp(engine.created, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"models": [{"name": f"{engine.name}:latest", "model": f"{engine.name}:latest",
                        "modified_at": modified, "size": size, "digest": "",
                        "details": {"parent_model": "", "format": "safetensors", "family": family,
                                    "families": [family] if family else None,
                                    "parameter_size": _param_size(params),
                                    "quantization_level": dtype}}]}


@router.get("/api/version")
async def version():
    return {"version": OLLAMA_VERSION}
