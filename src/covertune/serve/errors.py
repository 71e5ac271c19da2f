"""Errors a client sees: a status, a one-line message, its type and the request field it is about.

covertune's and the OpenAI-compatible routes answer ``{"error": {"message", "type", "field"}}`` (OpenAI
clients also read ``param`` and ``code``); the Ollama-compatible routes answer ``{"error": "message"}``
as Ollama does. Never a traceback: unexpected exceptions are logged with theirs and answered 500.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
         415: "invalid_request_error", 422: "invalid_request_error",
         503: "overloaded_error", 500: "server_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}

    @property
    def type(self) -> str:
        return TYPES.get(self.status, "invalid_request_error")

    def body(self, ollama: bool = False) -> dict:
        if ollama:
            return {"error": self.message}
        return {"error": {"message": self.message, "type": self.type, "field": self.field,
                          "param": self.field, "code": None}}

    def response(self, ollama: bool = False) -> JSONResponse:
        return JSONResponse(self.body(ollama), status_code=self.status, headers=self.headers)


def field_of(loc: tuple) -> str | None:
    """A pydantic error location as a dotted field name ("messages.0.content"), without the body marker."""
    # a union's failed members appear in the location as type tags ("str", "list[ContentPart]"): dropped
    tags = {"str", "int", "float", "bool", "none", "dict", "list"}
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and (p in tags or "[" in p))]
    return ".".join(parts) or None


def validation_error(exc) -> APIError:
    """The first pydantic validation error as a 422 naming its field."""
    err = exc.errors()[0]
    name = field_of(err.get("loc", ()))
    msg = err.get("msg", "invalid value")
    if err.get("type") == "missing":
        return APIError(422, f"field '{name}' is required", name)
    return APIError(422, f"field '{name}': {msg}" if name else msg, name)
