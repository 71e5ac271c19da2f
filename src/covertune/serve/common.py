"""What every route shares: reading a JSON body within the limits, parsing it, server-sent events."""

from __future__ import annotations

import asyncio
import json

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from covertune.serve.errors import APIError, validation_error


class _NonFinite(str):
    """Where strict parsing met Infinity, -Infinity or NaN (standard JSON has none of them)."""


def _reject_constant(name: str):
    return _NonFinite(name)


def bad_value(data, path: str = "") -> tuple[str, str] | None:
    """(field, problem) for the first non-finite number or string with a lone surrogate (which no text
    encoding can hold), or None."""
    if isinstance(data, _NonFinite):
        return path, f"{data} is not a finite number"
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path, "holds a lone UTF-16 surrogate (\\ud800-\\udfff without its pair), which is not text"
        return None
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        found = bad_value(key, path or "body") if isinstance(key, str) else None
        found = found or bad_value(value, where)
        if found:
            return found
    return None


def is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request's JSON object: 415 unless sent as application/json, 413 over ``max_bytes`` (checked while
    reading), 400 if not JSON, 422 naming the field of a non-finite number or a lone surrogate. A client that
    disconnects while sending is a 400 nobody reads (one log line)."""
    if not is_json(request.headers.get("content-type", "")):
        raise APIError(415, "send the body as JSON with 'Content-Type: application/json' (curl: -H "
                       "'Content-Type: application/json'); got " + repr(request.headers.get("content-type", "none")))
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise APIError(413, f"request body is {length} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise APIError(413, f"request body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise APIError(400, f"the client disconnected while sending the request body ({size} bytes read)") from None
    body = b"".join(chunks)
    if not body.strip():
        raise APIError(400, "request body is empty; send a JSON object")
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise APIError(400, f"request body is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    found = bad_value(data)
    if found:
        name, problem = found
        raise APIError(422, f"field '{name}': {problem}" if name else f"a key {problem}", name or None)
    return data


def parse(model: type[BaseModel], data: dict):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


def sse(data) -> str:
    """One server-sent event carrying ``data`` as JSON (or a literal string such as [DONE])."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n"


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def results_unless_gone(request: Request, tickets) -> list:
    """The tickets' results; when the client disconnects first, the tickets are cancelled (their batch rows
    stop at the next token, as a streamed request's do) and a 499 nobody reads is raised."""
    results = asyncio.ensure_future(asyncio.gather(*(t.result() for t in tickets)))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({results, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not results.done():
        results.cancel()
        for t in tickets:
            t.cancel()
        await asyncio.wait({results})
        if not results.cancelled():
            results.exception()  # retrieved: asyncio would log an exception nobody read
        raise APIError(499, "the client disconnected before its letter was written; generation stopped")
    return results.result()
