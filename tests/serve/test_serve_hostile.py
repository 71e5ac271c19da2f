"""Hostile input: web pages driving the server, DNS rebinding, non-standard JSON, disconnects, the queue bound."""

from __future__ import annotations

import socket
import time

import pytest

from covertune.generation.decoding import Decoding
from covertune.serve.batching import Batcher, Job, QueueFull

from serve_fixtures import FIELDS, client, make_client, make_server, serve_model_dir, tiny_lm  # noqa: F401
from test_serve_limits import EXTENSION

EVIL = "https://evil.example"
SMALL = {**FIELDS, "max_new_tokens": 4}
JSON_ROUTES = [("/v1/cover-letter", SMALL),
               ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}),
               ("/api/generate", {"model": "covertune", "prompt": "hi", "stream": False,
                                  "options": {"num_predict": 4}}),
               ("/api/chat", {"model": "covertune", "messages": [{"role": "user", "content": "hi"}],
                              "stream": False, "options": {"num_predict": 4}})]


def status_and_message(r) -> tuple[int, str]:
    assert "Traceback" not in r.text
    err = r.json()["error"]
    return r.status_code, err if isinstance(err, str) else err["message"]


# ---------------------------------------------------------------- web pages (CSRF) and DNS rebinding

@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
@pytest.mark.parametrize("route,body", JSON_ROUTES)
def test_json_routes_refuse_other_content_types(client, route, body, content_type):
    import json

    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post(route, content=json.dumps(body).encode(), headers=headers)
    status, message = status_and_message(r)
    assert status == 415 and "application/json" in message


def test_json_with_charset_is_accepted(client):
    import json

    r = client.post("/v1/cover-letter", content=json.dumps(SMALL).encode(),
                    headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_foreign_origin_is_403_whatever_the_content_type(client, content_type):
    import json

    r = client.post("/v1/cover-letter", content=json.dumps(SMALL).encode(),
                    headers={"Origin": EVIL, "Content-Type": content_type})
    status, message = status_and_message(r)
    assert status == 403 and EVIL in message and "--cors-origins" in message
    assert "access-control-allow-origin" not in r.headers
    assert client.get("/metrics", headers={"Origin": EVIL}).status_code == 403
    assert client.get("/api/tags", headers={"Origin": "null"}).status_code == 403  # sandboxed frames, file://
    assert client.get("/health", headers={"Origin": "http://localhost:3000"}).status_code == 403


def test_allowed_origins_pass(make_client):
    client = make_client(cors_origins=["http://localhost:3000"])
    for origin in (EXTENSION, "http://localhost:3000", "moz-extension://0a1b2c3d-1234"):
        r = client.post("/v1/cover-letter", json=SMALL, headers={"Origin": origin})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
    assert client.post("/v1/cover-letter", json=SMALL).status_code == 200  # no Origin: curl, scripts


def test_pinned_extension_id_refuses_other_extensions(make_client):
    pinned = make_client(cors_origins=[EXTENSION])
    assert pinned.post("/v1/cover-letter", json=SMALL, headers={"Origin": EXTENSION}).status_code == 200
    other = "chrome-extension://zyxwvutsrqponmlkzyxwvutsrqponmlk"
    r = pinned.post("/v1/cover-letter", json=SMALL, headers={"Origin": other})
    assert status_and_message(r)[0] == 403
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    assert "access-control-allow-origin" not in pinned.options("/v1/cover-letter",
                                                               headers={"Origin": other, **pre}).headers
    r = pinned.options("/v1/cover-letter", headers={"Origin": EXTENSION, **pre})
    assert r.headers["access-control-allow-origin"] == EXTENSION


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000", "attacker.localhost.evil"])
def test_rebinding_host_is_refused(client, host):
    for method, route in (("GET", "/metrics"), ("GET", "/health"), ("POST", "/v1/cover-letter")):
        r = client.request(method, route, json=SMALL, headers={"Host": host})
        status, message = status_and_message(r)
        assert status == 403 and "--allowed-hosts" in message


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "localhost", "[::1]:8000", "127.0.0.2"])
def test_loopback_hosts_pass(client, host):
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_widens(make_client):
    client = make_client(allowed_hosts=["box.lan"])
    assert client.get("/health", headers={"Host": "box.lan:8000"}).status_code == 200
    assert client.get("/health", headers={"Host": "other.lan"}).status_code == 403
    bound = make_client(host="192.168.1.20")
    assert bound.get("/health", headers={"Host": "192.168.1.20:8000"}).status_code == 200
    anything = make_client(allowed_hosts=["*"])
    assert anything.get("/health", headers={"Host": "whatever.example"}).status_code == 200


# ---------------------------------------------------------------- input that reached a 500

@pytest.mark.parametrize("route,body,field", [
    ("/v1/cover-letter", b'{"job_title": "\\ud800"}', "job_title"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}', "messages.0.content"),
    ("/api/generate", b'{"model": "covertune", "prompt": "\\ud800", "stream": false}', "prompt"),
    ("/api/chat", b'{"model": "covertune", "messages": [{"role": "user", "content": "\\ud83d"}]}',
     "messages.0.content"),
])
def test_lone_surrogate_is_422_naming_the_field(client, route, body, field):
    r = client.post(route, content=body, headers={"Content-Type": "application/json"})
    status, message = status_and_message(r)
    assert status == 422 and field in message


@pytest.mark.parametrize("route,body,field", [
    ("/v1/cover-letter", {**SMALL, "temperature": 0.7, "seed": 2 ** 32}, "seed"),
    ("/v1/cover-letter", {**SMALL, "temperature": 0.7, "seed": -1}, "seed"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": 2 ** 40},
     "seed"),
    ("/api/generate", {"model": "covertune", "prompt": "hi", "options": {"temperature": 1, "seed": -5}},
     "options.seed"),
    ("/api/chat", {"model": "covertune", "messages": [{"role": "user", "content": "hi"}],
                   "options": {"temperature": 1, "seed": 2 ** 33}}, "options.seed"),
])
def test_seed_out_of_range_is_422(client, route, body, field):
    status, message = status_and_message(client.post(route, json=body))
    assert status == 422 and field in message


@pytest.mark.parametrize("text,field", [("Infinity", "temperature"), ("NaN", "temperature"),
                                        ("-Infinity", "temperature")])
def test_non_finite_numbers_are_422(client, text, field):
    body = b'{"job_title": "Welder", "max_new_tokens": 4, "temperature": ' + text.encode() + b"}"
    status, message = status_and_message(client.post("/v1/cover-letter", content=body,
                                                     headers={"Content-Type": "application/json"}))
    assert status == 422 and field in message and "finite" in message
    body = b'{"model": "covertune", "prompt": "hi", "options": {"top_p": NaN}}'
    status, message = status_and_message(client.post("/api/generate", content=body,
                                                     headers={"Content-Type": "application/json"}))
    assert status == 422 and "options.top_p" in message


def test_disconnect_mid_body_is_a_quiet_log_line(make_server, caplog):
    import logging

    caplog.set_level(logging.INFO)
    url, app = make_server()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/cover-letter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 5000\r\n\r\n" + b'{"job_title": "' + b"x" * 100)
        time.sleep(0.3)
    deadline = time.time() + 10
    while not any("disconnect" in rec.getMessage() for rec in caplog.records):
        assert time.time() < deadline, [rec.getMessage() for rec in caplog.records]
        time.sleep(0.05)
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL") or rec.exc_info]


# ---------------------------------------------------------------- context and the queue

def test_too_long_prompt_names_the_prompt(make_client, tiny_lm):
    client = make_client(max_field_chars=10 ** 6, max_body_bytes=10 ** 7)
    context = tiny_lm.model.config.max_position_embeddings
    long = {**FIELDS, "skillsets": "SQL, Python, Tableau. " * context}
    status, message = status_and_message(client.post("/v1/cover-letter", json=long))
    assert status == 422 and "max_new_tokens" not in message and "prompt" in message
    assert client.post("/v1/cover-letter", json=long).json()["error"]["field"] == "skillsets"  # its longest field
    status, message = status_and_message(client.post("/api/generate", json={
        "model": "covertune", "prompt": "word " * (context + 10), "stream": False}))
    assert status == 422 and "prompt" in message and "num_predict" not in message


def test_max_queue_bounds_requests_of_different_settings(tiny_lm):
    batcher = Batcher(tiny_lm.model, tiny_lm.tokenizer, max_batch_size=8, window_s=0.05, max_queue=4)

    def job(penalty):
        return Job([1, 2, 3], Decoding(max_new_tokens=2, repetition_penalty=penalty), lambda kind, payload: None)

    for k in range(4):
        batcher.submit(job(1.0 + k / 10))
    taken = batcher._take_batch()  # the worker takes one; the others wait for batches of their own settings
    assert len(taken) == 1 and batcher.waiting() == 3
    batcher.submit(job(2.0))
    with pytest.raises(QueueFull):
        batcher.submit(job(2.1))
    assert batcher.waiting() == 4


def test_non_streamed_request_stops_when_its_client_goes(make_server, caplog):
    import gc
    import logging

    caplog.set_level(logging.INFO)
    url, app = make_server(max_new_tokens_cap=4096)
    engine = app.state.engine
    port = int(url.rsplit(":", 1)[1])
    import json

    body = json.dumps({**FIELDS, "max_new_tokens": 1800}).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/cover-letter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        deadline = time.time() + 60
        while not engine.batcher.busy:
            assert time.time() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
    deadline = time.time() + 120
    while engine.metrics.letters == 0:
        assert time.time() < deadline
        time.sleep(0.05)
    assert engine.metrics.completion_tokens < 1800  # cut off when the client went, not written to the end
    deadline = time.time() + 10
    while not any("disconnected before its letter" in rec.getMessage() for rec in caplog.records):
        assert time.time() < deadline
        time.sleep(0.05)
    gc.collect()  # asyncio reports a future whose exception nobody retrieved when it is collected
    assert not [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR or rec.exc_info]
