"""OpenAI-compatible routes: ``POST /v1/chat/completions`` (``stream`` as server-sent
``chat.completion.chunk`` events ending in ``[DONE]``) and ``GET /v1/models``.

The last user message is the request (see ``covertune.serve.engine.message_fields`` for how it maps to a
letter; a message of the 8 fields gets the server's recipe, candidates and form, as /v1/cover-letter does,
its chosen letter streamed as one piece); earlier turns and system messages are not fed to the model. ``max_completion_tokens`` (or the
older ``max_tokens``), ``temperature``, ``top_p`` and ``seed`` are honoured; greedy when temperature is
absent or 0. With ``stream_options.include_usage`` a last chunk carries the token counts. Other request
fields (``stop``, ``tools``, ``response_format``, ``logprobs``, ...) are accepted and ignored; ``n`` must be 1.
"""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from covertune.serve.chosen import letter_ticket
from covertune.serve.common import SSE_HEADERS, parse, read_json, results_unless_gone, sse, usage
from covertune.serve.engine import GenerationFailed, message_fields
from covertune.serve.errors import APIError
from covertune.serve.schemas import ChatCompletionRequest

router = APIRouter()


def last_user_text(messages, engine) -> str:
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise APIError(422, "messages hold no message with role 'user'", "messages")
    text = users[-1].text()
    engine.check_length(f"messages.{len(messages) - 1 - messages[::-1].index(users[-1])}.content", text)
    if not text.strip():
        raise APIError(422, "the last user message is empty", "messages")
    return text


def message_ids(engine, text: str, field: str = "messages"):
    """(token ids, the 8 fields or None) for a message's text."""
    fields = message_fields(text)
    if fields is not None:
        for name, value in fields.items():
            engine.check_length(name, value)
        return engine.fields_ids(fields), fields
    return engine.text_ids(text), None


@router.get("/v1/models")
async def models(request: Request):
    engine = request.app.state.engine
    return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": engine.created,
                                        "owned_by": "covertune"}]}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    engine = request.app.state.engine
    req = parse(ChatCompletionRequest, await read_json(request, engine.cfg.max_body_bytes))
    engine.check_model(req.model)
    text = last_user_text(req.messages, engine)
    args = dict(max_new_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature,
                top_p=req.top_p, top_k=None, seed=req.seed, repetition_penalty=None)
    decoding = engine.decoding(**args)
    ids, fields = message_ids(engine, text)
    engine.check_context(ids, decoding, "messages", "max_completion_tokens")
    ticket, _ = letter_ticket(engine, ids, fields, args, stream=req.stream)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": cid, "created": created, "model": engine.name, "system_fingerprint": None}

    if not req.stream:
        try:
            [result] = await results_unless_gone(request, [ticket])
        except GenerationFailed as e:
            raise APIError(500, str(e)) from None
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.letter},
                             "logprobs": None, "finish_reason": result.finish_reason}],
                "usage": usage(result)}

    include_usage = bool((req.stream_options or {}).get("include_usage"))

    def chunk(delta: dict, finish: str | None = None) -> str:
        return sse({**head, "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    async def events():
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for kind, payload in ticket.events():
                if kind == "delta":
                    yield chunk({"content": payload})
                else:
                    yield chunk({}, payload.finish_reason)
                    if include_usage:
                        yield sse({**head, "object": "chat.completion.chunk", "choices": [],
                                   "usage": usage(payload)})
            yield sse("[DONE]")
        except GenerationFailed as e:
            yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
        finally:
            ticket.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
