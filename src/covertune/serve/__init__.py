"""`covertune serve`: an HTTP server for a run's model.

Modules: ``app`` (the FastAPI application, middleware, uvicorn), ``routes`` (``/v1/cover-letter``,
``/health``, ``/metrics``), ``openai_compat`` and ``ollama_compat`` (the compatible routes), ``engine``
(request checks, prompt encoding, metrics), ``batching`` (the worker that generates batches), ``schemas``
(request bodies), ``errors`` and ``common`` (what the routes share).
"""
