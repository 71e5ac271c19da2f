"""`covertune serve`: the FastAPI application and its uvicorn server.

FastAPI + uvicorn rather than transformers' own ``transformers serve``: covertune needs its own route
(``/v1/cover-letter`` with the grounding check), its prompt encoding and letter extraction exactly as
``covertune generate`` applies them, adapters loaded as the fine-tuned pass loads them, Ollama-compatible
routes, and limits, auth and CORS of its own; ``transformers serve`` offers OpenAI routes over a plain
chat template. FastAPI gives request parsing (pydantic), streaming responses and middleware; uvicorn a
well-kept ASGI server with graceful shutdown.

The model is loaded once; one worker thread generates (``covertune.serve.batching``). Every request but
``GET /health`` and CORS preflights needs ``Authorization: Bearer KEY`` when a key is set (``--api-key``
or the ``COVERTUNE_API_KEY`` environment variable). Requests from web origins and host names the server
does not allow are refused first (``covertune.serve.origins``); CORS allows browser extension origins
(unless one is pinned) and those given with ``--cors-origins``. On SIGINT/SIGTERM uvicorn stops accepting connections, lets in-flight
requests finish (``--graceful-timeout-s``), then the worker finishes what is queued.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from covertune.config.build import check_fields
from covertune.config.groups import CANDIDATES
from covertune.config.stages import ServeConfig
from covertune.generation.select import SELECT_MODES
from covertune.serve.errors import APIError
from covertune.serve.origins import OriginHostMiddleware, cors_settings

log = logging.getLogger(__name__)

API_KEY_ENV = "COVERTUNE_API_KEY"
OPEN_PATHS = ("/health",)


def _is_ollama(path: str) -> bool:
    return path.startswith("/api/")


class GuardMiddleware:
    """Bearer-token check (when a key is set) and per-request metrics, around every route."""

    def __init__(self, app: ASGIApp, engine, api_key: str = ""):
        self.app, self.engine, self.api_key = app, engine, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, t0, status = scope["path"], time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key and path not in OPEN_PATHS and scope["method"] != "OPTIONS":
                headers = dict(scope.get("headers") or [])
                auth = headers.get(b"authorization", b"").decode("latin-1")
                scheme, _, token = auth.partition(" ")
                if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(),
                                                                            self.api_key.encode()):
                    err = APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                   headers={"WWW-Authenticate": "Bearer"})
                    log.info("401 %s %s: %s", scope["method"], path, "no bearer token" if not auth else "wrong key")
                    return await err.response(_is_ollama(path))(scope, receive, send_status)
            await self.app(scope, receive, send_status)
        finally:
            route = path if path in ROUTES else "other"
            self.engine.metrics.request(route, status[0], time.perf_counter() - t0)


ROUTES = {"/health", "/metrics", "/v1/cover-letter", "/v1/chat/completions", "/v1/models",
          "/api/generate", "/api/chat", "/api/tags", "/api/version"}


def create_app(engine, cfg: ServeConfig) -> FastAPI:
    """The application around a loaded ``Engine``; the batcher's worker runs while the app's lifespan does."""
    from covertune.serve import ollama_compat, openai_compat, routes  # torch and transformers, through the engine

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.batcher.start()
        log.info("serving %s as '%s'", engine.lm.source, engine.name)
        try:
            yield
        finally:
            log.info("shutting down: finishing %d queued request(s)", engine.batcher.waiting())
            engine.batcher.stop(timeout=cfg.graceful_timeout_s)

    app = FastAPI(title="covertune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    for r in (routes.router, openai_compat.router, ollama_compat.router):
        app.include_router(r)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        log.info("%d %s %s: %s", exc.status, request.method, request.url.path, exc.message)
        return exc.response(_is_ollama(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code,
                                                                                         str(exc.detail))
        return APIError(exc.status_code, message, headers=getattr(exc, "headers", None)).response(
            _is_ollama(request.url.path))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("500 %s %s: %s", request.method, request.url.path, exc)
        return APIError(500, "internal server error; the server log has the cause").response(
            _is_ollama(request.url.path))

    api_key = cfg.api_key or os.environ.get(API_KEY_ENV, "")
    app.add_middleware(GuardMiddleware, engine=engine, api_key=api_key)
    # added last, so outermost: preflights are answered and every response (401 included) carries CORS headers
    app.add_middleware(CORSMiddleware, **cors_settings(cfg.cors_origins), allow_methods=["GET", "POST", "OPTIONS"],
                       allow_headers=["Authorization", "Content-Type"], max_age=600)
    # outermost: a foreign web origin or host name gets 403 before anything else runs
    app.add_middleware(OriginHostMiddleware, cors_origins=cfg.cors_origins, bound=cfg.host,
                       allowed_hosts=cfg.allowed_hosts)
    return app


def check_config(cfg: ServeConfig) -> None:
    """One clear line for an option out of range, before the model loads."""
    for name in ("max_batch_size", "max_queue", "max_new_tokens_cap", "max_body_bytes", "max_field_chars"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 0 <= cfg.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {cfg.port}")
    if cfg.batch_window_ms < 0 or cfg.retry_after_s < 0 or cfg.graceful_timeout_s < 0:
        raise ValueError("--batch-window-ms, --retry-after-s and --graceful-timeout-s must not be negative")
    if not cfg.model_name.strip():
        raise ValueError("--model-name must not be empty")
    if not 1 <= cfg.candidates <= cfg.max_batch_size:
        raise ValueError(f"--candidates must be 1 to --max-batch-size ({cfg.max_batch_size}), got {cfg.candidates}")
    if cfg.select not in SELECT_MODES:
        raise ValueError(f"--select must be one of {', '.join(SELECT_MODES)}, got {cfg.select!r}")
    check_fields(cfg, ("max_new_tokens", *CANDIDATES.names()))  # the ranges the option groups declare


