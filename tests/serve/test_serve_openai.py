"""OpenAI-compatible routes, through the official `openai` client against a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import pytest

from covertune.core.prompt import render_prompt

from serve_fixtures import FIELDS, make_client, make_server, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")


@pytest.fixture
def server(make_server):
    return make_server(api_key="test-key")[0]


def test_openai_client(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["covertune"] and models.data[0].object == "model"

    prompt = render_prompt(FIELDS)  # a covertune prompt: used as the 8 fields
    done = client.chat.completions.create(model="covertune", messages=[{"role": "user", "content": prompt}])
    assert done.object == "chat.completion" and done.id.startswith("chatcmpl-")
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert choice.message.content and done.usage.completion_tokens <= 24
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    stream = client.chat.completions.create(model="covertune", messages=[{"role": "user", "content": prompt}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == done.usage.completion_tokens

    # the same letter as /v1/cover-letter for the same fields (the prompt was parsed back into them)
    import httpx

    letter = httpx.post(f"{server}/v1/cover-letter", json=FIELDS, timeout=60,
                        headers={"Authorization": "Bearer test-key"}).json()["letter"]
    assert letter == choice.message.content


def test_openai_client_errors(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "gpt-4o" in str(e.value)


def test_free_text_and_json_messages(make_client):
    client = make_client()
    as_json = client.post("/v1/chat/completions", json={"messages": [
        {"role": "system", "content": "You write letters."},
        {"role": "user", "content": __import__("json").dumps(FIELDS)}]}).json()
    letter = client.post("/v1/cover-letter", json=FIELDS).json()["letter"]
    assert as_json["choices"][0]["message"]["content"] == letter  # a JSON object of the 8 fields
    free = client.post("/v1/chat/completions", json={"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Write a cover letter for a welder job."}]}]})
    assert free.status_code == 200 and free.json()["choices"][0]["message"]["content"] != letter
