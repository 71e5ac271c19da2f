"""`covertune serve --engine llama.cpp`: the server writes with the llama.cpp engine (the run's model as a GGUF
file, exported once into the run directory) and its letters are the ones `covertune write --engine llama.cpp`
writes for the same inputs and recipe: the candidates of a request decoded as one prompt's sequences, the
greedy letter, the streamed text and the chosen letter."""

from __future__ import annotations

import json
import threading

import pandas as pd
import pytest

from covertune.config.stages import ServeConfig, WriteConfig
from covertune.core import records

from serve_fixtures import serve_model_dir  # noqa: F401  (fixture)

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'covertune[llamacpp]')")

RECIPE = dict(candidates=3, select="grounded-mbr", candidate_temperature=1.3, seed=7, max_new_tokens=16, form="full")
ENGINE = dict(engine="llama.cpp", gguf_quant="f16", threads=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory, serve_model_dir, dataset_dir, make_tiny_adapter):  # noqa: F811
    from fastapi.testclient import TestClient

    from covertune.serve.app import create_app
    from covertune.stages.serve import build_engine

    out = tmp_path_factory.mktemp("served-llamacpp")
    make_tiny_adapter(serve_model_dir, out / "adapter", quantization="none")
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(3)
    rows = [records.inputs_of(records.from_source_row(r)) for r in frame.to_dict("records")]
    cfg = ServeConfig(model=str(serve_model_dir), out=str(out), **RECIPE, **ENGINE)
    engine = build_engine(cfg)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("COVERTUNE_API_KEY", raising=False)
        with TestClient(create_app(engine, cfg), base_url="http://127.0.0.1:8000") as client:
            yield client, engine, out, rows


def _write(model_dir, out, fields: dict, **options) -> dict:
    from covertune.stages.write import write

    flags = {k: v for k, v in fields.items() if v}
    return json.loads(write(WriteConfig(model=str(model_dir), out=str(out), json=True,
                                        **{**RECIPE, **ENGINE, **options}, **flags)))


def test_the_server_runs_the_runs_model_in_llamacpp(served):
    _, engine, out, _ = served
    assert "llama.cpp" in engine.lm.source and getattr(engine.lm.model, "is_llamacpp", False)
    assert list((out / ".engine" / "gguf").glob("f16-*/model.gguf"))


def test_served_candidates_are_writes(served, serve_model_dir):  # noqa: F811
    client, _, out, rows = served
    for fields in rows:
        body = client.post("/v1/cover-letter", json=fields).json()
        wrote = _write(serve_model_dir, out, fields)
        assert [c["letter"] for c in body["candidates"]["candidates"]] == \
            [c["letter"] for c in wrote["candidates"]["candidates"]]
        assert body["letter"] == wrote["letter"]
        assert len({c["letter"] for c in body["candidates"]["candidates"]}) > 1  # the samples differ


def test_served_greedy_letter_and_its_stream(served, serve_model_dir):  # noqa: F811
    client, _, out, rows = served
    fields = rows[0]
    greedy = _write(serve_model_dir, out, fields, candidates=1, form="auto")["letter"]
    body = client.post("/v1/cover-letter", json={**fields, "candidates": 1, "form": "auto"}).json()
    assert body["letter"] == greedy and greedy
    events = []
    with client.stream("POST", "/v1/cover-letter",
                       json={**fields, "candidates": 1, "form": "auto", "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) > 1 and "".join(deltas) == greedy  # streamed token by token
    assert events[-1]["type"] == "done" and events[-1]["letter"] == greedy
    # streamed with candidates: progress, then the chosen letter
    events = []
    with client.stream("POST", "/v1/cover-letter", json={**fields, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    progress = [e["done"] for e in events if e["type"] == "progress"]
    assert progress and progress[-1] == 3
    assert events[-1]["letter"] == _write(serve_model_dir, out, fields)["letter"]


def test_concurrent_requests_all_get_their_letters(served):
    """Greedy requests arriving together share a llama.cpp batch; each gets a letter of its own length limit."""
    client, engine, _, rows = served
    answers: list = [None] * 6

    def ask(i: int) -> None:
        answers[i] = client.post("/v1/cover-letter", json={**rows[i % len(rows)], "candidates": 1, "form": "auto",
                                                            "max_new_tokens": 4 + i})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * len(answers)
    for i, a in enumerate(answers):
        assert a.json()["usage"]["completion_tokens"] <= 4 + i
