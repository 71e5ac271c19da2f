"""What every route shares: reading a JSON body within the limits, parsing it, server-sent events."""

from __future__ import annotations

import json

from fastapi import Request
from pydantic import BaseModel, ValidationError

from covertune.serve.errors import APIError, validation_error


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request's JSON object: 413 over ``max_bytes`` (checked while reading), 400 if not JSON."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise APIError(413, f"request body is {length} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise APIError(413, f"request body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise APIError(400, "request body is empty; send a JSON object")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
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
