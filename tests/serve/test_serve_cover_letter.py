"""/v1/cover-letter and /health: the contract's shapes, streaming, and letters equal to `covertune generate`'s."""

from __future__ import annotations

import json

import pandas as pd

from covertune.core import io, records
from covertune.config.stages import GenerateConfig
from covertune.stages.generate import generate
from covertune.metrics.grounding import ground_json

from serve_fixtures import FIELDS, client, make_client, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)

GROUNDING_KEYS = {"name_mentioned", "company_mentioned", "job_title_mentioned", "skills_total", "skills_mentioned",
                  "skills_coverage", "skills_missing", "numbers_claimed", "unsupported_numbers", "unsupported_orgs"}


def sse_events(text: str) -> list:
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            payload = block[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok", "model": "covertune"}


def test_cover_letter_shape(client):
    r = client.post("/v1/cover-letter", json=FIELDS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"letter", "grounding", "usage", "model", "form"} and body["model"] == "covertune"
    assert isinstance(body["letter"], str) and body["letter"]
    assert set(body["grounding"]) == GROUNDING_KEYS
    assert body["grounding"] == ground_json(body["letter"], FIELDS)
    for k in ("name_mentioned", "company_mentioned", "job_title_mentioned"):
        assert body["grounding"][k] in (True, False)
    u = body["usage"]
    assert 0 < u["completion_tokens"] <= 24 and u["prompt_tokens"] > 50
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_empty_fields_give_null_mentions(client):
    body = client.post("/v1/cover-letter", json={"job_title": "Welder", "max_new_tokens": 8}).json()
    nulls = client.post("/v1/cover-letter", json={"job_title": "Welder", "applicant_name": None,
                                                  "hiring_company": "", "max_new_tokens": 8}).json()
    assert nulls == body  # missing, null and empty fields are the same request
    g = body["grounding"]
    assert g["name_mentioned"] is None and g["company_mentioned"] is None and g["skills_coverage"] is None
    assert g["skills_total"] == 0 and isinstance(g["job_title_mentioned"], bool)


def test_stream_reassembles_to_the_letter(client):
    plain = client.post("/v1/cover-letter", json=FIELDS).json()
    r = client.post("/v1/cover-letter", json={**FIELDS, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    deltas = [e for e in events[:-1] if e["type"] == "delta"]
    done = [e for e in events[:-1] if e["type"] == "done"]
    assert len(done) == 1 and events[-2] is done[0] and len(deltas) >= 2
    assert "".join(d["text"] for d in deltas) == done[0]["letter"] == plain["letter"]
    assert done[0]["grounding"] == plain["grounding"] and done[0]["usage"] == plain["usage"]
    assert done[0]["model"] == "covertune"


def test_model_name(client, make_client):
    assert client.post("/v1/cover-letter", json={**FIELDS, "model": "covertune", "max_new_tokens": 4}).status_code == 200
    r = client.post("/v1/cover-letter", json={**FIELDS, "model": "gpt-4"})
    assert r.status_code == 404
    assert r.json()["error"]["field"] == "model" and "gpt-4" in r.json()["error"]["message"]
    named = make_client(model_name="letters")
    assert named.get("/health").json()["model"] == "letters"
    assert named.post("/v1/cover-letter", json={**FIELDS, "model": "letters", "max_new_tokens": 4}).status_code == 200


def test_letters_equal_generate_stage(client, serve_model_dir, dataset_dir, tmp_path):
    """A served greedy letter is the letter `covertune generate` writes for the same inputs and model."""
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(3)
    rows = [records.from_source_row(r) for r in frame.to_dict("records")]
    io.write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    generate(GenerateConfig(model=str(serve_model_dir), out=str(tmp_path), models=["base"], max_new_tokens=24,
                            batch_size=2, dtype="fp32"))
    expected = pd.read_csv(tmp_path / "eval.csv", dtype=str, keep_default_na=False)["base_output"].tolist()
    got = [client.post("/v1/cover-letter", json=records.inputs_of(r)).json()["letter"] for r in rows]
    assert got == expected
    assert any(expected)  # not all empty: the comparison has teeth


def test_chat_prompt_format(serve_model_dir):
    """A model trained on chat prompts is fed the schema inside its chat template, as generate feeds it."""
    from fastapi.testclient import TestClient

    from covertune.config.stages import ServeConfig
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters
    from covertune.models.letter_model import load_letter_model
    from covertune.core.prompt import prompt_ids, wrap_chat, render_prompt
    from covertune.serve.app import create_app
    from covertune.serve.engine import Engine

    lm = load_letter_model(GenerateConfig(model=str(serve_model_dir), out="", prompt_format="chat", dtype="fp32"))
    chat_ids = lm.tokenizer(wrap_chat(render_prompt(FIELDS), lm.tokenizer), add_special_tokens=False).input_ids
    assert lm.prompt_ids(FIELDS) == chat_ids == prompt_ids(FIELDS, lm.tokenizer, "chat")
    expected = generate_letters(lm.model, lm.tokenizer, [chat_ids], 1, Decoding(max_new_tokens=16),
                                progress=False)[0]
    cfg = ServeConfig(max_new_tokens=16, form="auto")
    with TestClient(create_app(Engine(lm, cfg), cfg), base_url="http://127.0.0.1:8000") as client:
        body = client.post("/v1/cover-letter", json=FIELDS).json()
    assert body["letter"] == expected
    raw_ids = prompt_ids(FIELDS, lm.tokenizer, "raw")
    assert body["usage"]["prompt_tokens"] == len(chat_ids) != len(raw_ids)  # the template was fed


def test_form_full_and_body(make_client):
    """--form full (serve's default) completes the letter around the model's text; a request's form wins."""
    import json

    from covertune.generation.letter_form import apply_form, is_full

    auto = make_client().post("/v1/cover-letter", json=FIELDS).json()["letter"]
    c = make_client(form="full")
    body = c.post("/v1/cover-letter", json=FIELDS).json()
    assert body["form"] == "full" and body["letter"] == apply_form(auto, "full", FIELDS)
    assert is_full(body["letter"], FIELDS) and body["letter"].endswith("Sincerely,\nJane Doe")
    assert body["grounding"]["name_mentioned"] is True
    assert c.post("/v1/cover-letter", json={**FIELDS, "form": "body"}).json()["letter"] == apply_form(auto, "body", FIELDS)
    with c.stream("POST", "/v1/cover-letter", json={**FIELDS, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert [e["type"] for e in events] == ["delta", "done"] and events[0]["text"] == events[1]["letter"] == body["letter"]
    r = c.post("/v1/cover-letter", json={**FIELDS, "form": "letter"})
    assert r.status_code == 422 and "form must be one of auto, full, body" in r.text
