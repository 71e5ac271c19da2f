"""Ollama-compatible routes: NDJSON streaming by default, the documented shapes, Ollama's error shape."""

from __future__ import annotations

import json

from covertune.core.prompt import render_prompt

from serve_fixtures import FIELDS, client, make_client, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_generate_streams_by_default(client):
    prompt = render_prompt(FIELDS)
    r = client.post("/api/generate", json={"model": "covertune", "prompt": prompt})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = ndjson(r.text)
    assert all(line["model"] == "covertune" and line["created_at"].endswith("Z") for line in lines)
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    final = lines[-1]
    assert final["done_reason"] in ("stop", "length") and final["response"] == ""
    assert final["eval_count"] <= 24 and final["prompt_eval_count"] > 50 and final["total_duration"] > 0
    text = "".join(line["response"] for line in lines)

    whole = client.post("/api/generate", json={"model": "covertune:latest", "prompt": prompt, "stream": False})
    assert whole.headers["content-type"].startswith("application/json")
    body = whole.json()
    assert body["done"] is True and body["response"] == text
    assert body["response"] == client.post("/v1/cover-letter", json=FIELDS).json()["letter"]


def test_chat(client):
    messages = [{"role": "user", "content": json.dumps(FIELDS)}]
    lines = ndjson(client.post("/api/chat", json={"model": "covertune", "messages": messages}).text)
    assert all(line["message"]["role"] == "assistant" for line in lines) and lines[-1]["done"] is True
    text = "".join(line["message"]["content"] for line in lines)
    body = client.post("/api/chat", json={"model": "covertune", "messages": messages, "stream": False}).json()
    assert body["message"] == {"role": "assistant", "content": text} and body["done_reason"] in ("stop", "length")
    assert text == client.post("/v1/cover-letter", json=FIELDS).json()["letter"]


def test_options(client):
    body = client.post("/api/generate", json={"model": "covertune", "prompt": "Dear", "stream": False,
                                              "options": {"num_predict": 3}}).json()
    assert body["eval_count"] == 3 and body["done_reason"] == "length"
    kw = {"model": "covertune", "prompt": "Dear", "stream": False,
          "options": {"num_predict": 12, "temperature": 1.5, "seed": 11}}
    first = client.post("/api/generate", json=kw).json()["response"]
    assert client.post("/api/generate", json=kw).json()["response"] == first  # seeded sampling repeats
    greedy = client.post("/api/generate", json={**kw, "options": {"num_predict": 12}}).json()["response"]
    assert greedy != first


def test_tags_and_version(client):
    models = client.get("/api/tags").json()["models"]
    assert len(models) == 1
    m = models[0]
    assert m["name"] == "covertune:latest" and m["size"] > 0 and isinstance(m["modified_at"], str)
    assert m["details"]["family"] == "llama" and m["details"]["parameter_size"].endswith(("K", "M", "B"))
    assert isinstance(client.get("/api/version").json()["version"], str)


def test_errors_in_ollama_shape(client):
    r = client.post("/api/generate", json={"model": "llama3", "prompt": "hi"})
    assert r.status_code == 404 and "llama3" in r.json()["error"]
    r = client.post("/api/chat", content=b"not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = client.post("/api/generate", json={"prompt": "hi"})
    assert r.status_code == 422 and "model" in r.json()["error"]
    r = client.post("/api/generate", json={"model": "covertune", "prompt": ""})  # Ollama's load call
    assert r.status_code == 200 and r.json()["done"] is True
