"""The server's life: graceful shutdown finishes in-flight requests; the worker finishes what is queued."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from serve_fixtures import FIELDS, make_server, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)


def test_shutdown_finishes_in_flight_requests(make_server):
    url, app = make_server(max_new_tokens_cap=4096)
    engine, server = app.state.engine, app.state.server
    answers = {}

    def ask(name, body):
        try:
            answers[name] = httpx.post(f"{url}/v1/cover-letter", json=body, timeout=120)
        except httpx.HTTPError as e:
            answers[name] = e

    long = threading.Thread(target=ask, args=("long", {**FIELDS, "max_new_tokens": 300}))
    long.start()
    deadline = time.time() + 60
    while not engine.batcher.busy:  # the letter is being generated
        assert time.time() < deadline
        time.sleep(0.01)
    server.should_exit = True  # what SIGINT/SIGTERM do
    long.join(120)
    r = answers["long"]
    assert isinstance(r, httpx.Response) and r.status_code == 200, r
    assert r.json()["usage"]["completion_tokens"] == 300  # the whole letter, not cut off
    deadline = time.time() + 30
    while server.started and not server.should_exit:
        time.sleep(0.05)
    time.sleep(0.5)
    with pytest.raises(httpx.ConnectError):  # no new connections once it has stopped
        httpx.get(f"{url}/health", timeout=5)
