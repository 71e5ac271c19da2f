"""The HTTP server for a run's model (the command is ``covertune.stages.serve``).

Modules: ``app`` (the FastAPI application, middleware, uvicorn), ``routes`` (``/v1/cover-letter``,
``/health``, ``/metrics``), ``openai_compat`` and ``ollama_compat`` (the compatible routes), ``engine``
(request checks, prompt encoding, metrics), ``batching`` (the worker that generates batches), ``schemas``
(request bodies), ``errors`` and ``common`` (what the routes share).
"""

__all__ = ["app", "routes", "openai_compat", "ollama_compat", "engine", "batching", "schemas", "errors", "common"]
