"""Bad requests, limits, auth and CORS: each gets its status and a one-line message, never a traceback."""

from __future__ import annotations

import json
import time

import pytest

from covertune.generation.decoding import Decoding
from covertune.serve.batching import Job

from serve_fixtures import FIELDS, client, make_client, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)

EXTENSION = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"


def error(r, status: int, field=None) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "field"} and body["error"]["field"] == field
    assert "Traceback" not in r.text and "File \"" not in r.text
    return body["error"]["message"]


def test_invalid_json_is_400(client):
    json_type = {"Content-Type": "application/json"}
    assert "not valid JSON" in error(client.post("/v1/cover-letter", content=b'{"job_title": ', headers=json_type),
                                     400)
    assert "JSON object" in error(client.post("/v1/cover-letter", json=["a", "b"]), 400)
    assert "empty" in error(client.post("/v1/cover-letter", content=b"", headers=json_type), 400)
    assert "not valid JSON" in error(client.post("/v1/chat/completions", content=b"\xff\xfe", headers=json_type),
                                     400)


def test_wrong_types_are_422_naming_the_field(client):
    assert "job_title" in error(client.post("/v1/cover-letter", json={"job_title": 5}), 422, "job_title")
    error(client.post("/v1/cover-letter", json={**FIELDS, "stream": "yes"}), 422, "stream")
    error(client.post("/v1/cover-letter", json={**FIELDS, "max_new_tokens": 0}), 422, "max_new_tokens")
    error(client.post("/v1/cover-letter", json={**FIELDS, "temperature": -1}), 422, "temperature")
    error(client.post("/v1/chat/completions", json={"messages": []}), 422, "messages")
    error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": 3}]}), 422,
          "messages.0.content")
    assert "required" in error(client.post("/v1/chat/completions", json={"model": "covertune"}), 422, "messages")
    error(client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "hi"}]}), 422,
          "messages")


def test_field_too_long_is_422(make_client):
    client = make_client(max_field_chars=100)
    msg = error(client.post("/v1/cover-letter", json={**FIELDS, "skillsets": "x" * 101}), 422, "skillsets")
    assert "101" in msg and "100" in msg
    error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "y" * 101}]}), 422,
          "messages.0.content")
    r = client.post("/api/generate", json={"model": "covertune", "prompt": "z" * 101})
    assert r.status_code == 422 and "prompt" in r.json()["error"]


def test_body_too_large_is_413(make_client):
    client = make_client(max_body_bytes=2000)
    assert "2000" in error(client.post("/v1/cover-letter", json={**FIELDS, "skillsets": "x" * 3000}), 413)

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 500

    assert "2000" in error(client.post("/v1/cover-letter", content=chunks(),
                                       headers={"Content-Type": "application/json"}), 413)


def test_max_new_tokens_is_capped(make_client):
    client = make_client(max_new_tokens_cap=6)
    body = client.post("/v1/cover-letter", json={**FIELDS, "max_new_tokens": 100000}).json()
    assert body["usage"]["completion_tokens"] <= 6


def test_context_overflow_is_422(make_client, tiny_lm):
    client = make_client(max_new_tokens_cap=10 ** 6)
    context = tiny_lm.model.config.max_position_embeddings
    msg = error(client.post("/v1/cover-letter", json={**FIELDS, "max_new_tokens": context}), 422, "max_new_tokens")
    assert "context" in msg


def test_unknown_route_and_method(client):
    assert "/nowhere" in error(client.get("/nowhere"), 404)
    assert error(client.get("/v1/cover-letter"), 405)
    r = client.get("/api/nowhere")
    assert r.status_code == 404 and isinstance(r.json()["error"], str)  # Ollama's error shape


@pytest.mark.parametrize("from_env", [False, True])
def test_bearer_token(make_client, monkeypatch, from_env):
    if from_env:
        monkeypatch.setenv("COVERTUNE_API_KEY", "s3cret")
        client = make_client()
    else:
        client = make_client(api_key="s3cret")
    assert client.get("/health").status_code == 200  # no auth needed
    small = {**FIELDS, "max_new_tokens": 4}
    assert "Bearer" in error(client.post("/v1/cover-letter", json=small), 401)
    r = client.post("/v1/cover-letter", json=small, headers={"Authorization": "Bearer wrong"})
    error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    error(client.get("/v1/models", headers={"Authorization": "Basic s3cret"}), 401)
    assert client.get("/api/tags").status_code == 401
    ok = client.post("/v1/cover-letter", json=small, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["letter"] is not None


def test_cors(make_client):
    client = make_client(api_key="k", cors_origins=["http://localhost:3000"])
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    r = client.options("/v1/cover-letter", headers={"Origin": EXTENSION, **pre})  # preflight: no auth needed
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == EXTENSION
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed and "POST" in r.headers["access-control-allow-methods"]
    r = client.options("/v1/cover-letter", headers={"Origin": "http://localhost:3000", **pre})
    assert r.headers.get("access-control-allow-origin") == "http://localhost:3000"
    r = client.options("/v1/cover-letter", headers={"Origin": "https://evil.example", **pre})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    # actual requests carry the header too, a 401 included (so the extension can read the error)
    r = client.get("/health", headers={"Origin": EXTENSION})
    assert r.headers["access-control-allow-origin"] == EXTENSION
    r = client.post("/v1/cover-letter", json=FIELDS, headers={"Origin": EXTENSION})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == EXTENSION
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": "https://evil.example"}).headers


def test_full_queue_is_503(make_client, tiny_lm):
    client = make_client(max_queue=2)
    engine = client.app.state.engine
    engine.batcher.stop()  # the worker ends: nothing drains the queue
    engine.batcher._stopping.clear()
    parked = [Job([1, 2, 3], Decoding(max_new_tokens=2), lambda kind, payload: None) for _ in range(2)]
    for job in parked:
        engine.batcher.submit(job)
    r = client.post("/v1/cover-letter", json=FIELDS)
    assert "busy" in error(r, 503) and r.headers["retry-after"] == "2"
    r = client.post("/api/generate", json={"model": "covertune", "prompt": "hi", "stream": False})
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    engine.batcher.start()  # the parked jobs drain; the server serves again
    deadline = time.time() + 30
    while engine.batcher.waiting():
        assert time.time() < deadline
        time.sleep(0.01)
    r = client.post("/v1/cover-letter", json={**FIELDS, "max_new_tokens": 4})
    assert r.status_code == 200


def test_generation_failure_is_500_without_traceback(make_client, tiny_lm, monkeypatch, caplog):
    client = make_client()

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(tiny_lm.model, "generate", broken)
    msg = error(client.post("/v1/cover-letter", json=FIELDS), 500)
    assert "server log" in msg and "simulated" not in msg
    assert any("simulated" in rec.getMessage() or (rec.exc_info and "simulated" in str(rec.exc_info[1]))
               for rec in caplog.records)  # the log names the cause
    r = client.post("/v1/cover-letter", json={**FIELDS, "stream": True})
    events = [json.loads(b[6:]) for b in r.text.split("\n\n") if b.strip()]
    assert events[-1]["type"] == "error" and "server log" in events[-1]["error"]["message"]
    monkeypatch.undo()
    assert client.post("/v1/cover-letter", json={**FIELDS, "max_new_tokens": 4}).status_code == 200  # still up


def test_bad_options_fail_before_loading(capsys):
    from covertune.cli import main

    assert main(["serve", "--max-batch-size", "0"]) == 2
    assert "--max-batch-size must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
