"""Served letters are the measured letters: for a handful of test rows, `covertune write` and
/v1/cover-letter (loaded from the run directory, so with the run's recipe: 3 candidates, grounded-mbr, form
full) return exactly the letter `covertune generate` chose for that row; streamed, the candidates' progress
comes first, then the same letter."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covertune.core import io, records
from covertune.config.stages import GenerateConfig, ServeConfig, WriteConfig
from covertune.stages.generate import generate
from covertune.generation.letter_form import is_full
from covertune.models.recipe import read_recipe
from covertune.stages.write import write

from serve_fixtures import serve_model_dir  # noqa: F401  (fixture)

ROWS = 4


def _generate_cfg(model_dir, out) -> GenerateConfig:
    """All rows' candidates in one batch of 4 x 3 rows, prompts of different lengths (left-padded)."""
    return GenerateConfig(model=str(model_dir), out=str(out), models=["fine_tuned"], max_new_tokens=16, dtype="fp32",
                          candidates=3, candidate_batch_size=ROWS, select="grounded-mbr", candidate_temperature=1.3,
                          seed=7, form="full")


@pytest.fixture(scope="module")
def measured(tmp_path_factory, serve_model_dir, dataset_dir, make_tiny_adapter):  # noqa: F811
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(ROWS)
    rows = [records.from_source_row(r) for r in frame.to_dict("records")]
    out = tmp_path_factory.mktemp("measured")
    io.write_jsonl(out / "data" / "test.jsonl", rows)
    make_tiny_adapter(serve_model_dir, out / "adapter", quantization="none")
    generate(_generate_cfg(serve_model_dir, out))
    letters = pd.read_csv(out / "eval.csv", dtype=str, keep_default_na=False)["fine_tuned_output"].tolist()
    assert all(is_full(text, records.inputs_of(r)) for text, r in zip(letters, rows))  # generate --form full
    return out, rows, letters


def test_generate_records_its_recipe(measured, serve_model_dir):  # noqa: F811
    out, _, _ = measured
    assert read_recipe(out) == {"candidates": 3, "select": "grounded-mbr", "candidate_temperature": 1.3,
                                "candidate_top_p": 0.95, "top_k": 50, "repetition_penalty": 1.0,
                                "select_repetition_weight": 0.0, "select_skills_weight": 0.0, "seed": 7,
                                "max_new_tokens": 16, "form": "full", "prompt_format": "raw"}
    assert json.loads((out / "recipe.json").read_text())["split"] == "test"
    # a finished run without a recipe (generated before recipes were kept) gets it on the next, skipped, generate
    recipe = (out / "recipe.json").read_text()
    (out / "recipe.json").unlink()
    assert "is complete" in generate(_generate_cfg(serve_model_dir, out))
    assert (out / "recipe.json").read_text() == recipe


def test_write_returns_the_letter_generate_chose(measured, serve_model_dir):  # noqa: F811
    out, rows, letters = measured
    side = io.read_jsonl(out / "candidates" / "test.fine_tuned.jsonl")
    assert any(len({c["letter"] for c in s["candidates"]}) > 1 for s in side)  # the samples differ
    for row, letter in zip(rows, letters):
        flags = {k: v for k, v in records.inputs_of(row).items() if v}
        got = json.loads(write(WriteConfig(model=str(serve_model_dir), out=str(out), dtype="fp32", engine="torch", json=True,
                                           **flags)))
        assert got["letter"] == letter
        assert len(got["candidates"]["candidates"]) == 3 and got["form"] == "full"  # the run's recipe


def test_served_letters_are_generates(measured, serve_model_dir, monkeypatch):  # noqa: F811
    from fastapi.testclient import TestClient

    from covertune.stages.serve import build_engine
    from covertune.serve.app import create_app

    monkeypatch.delenv("COVERTUNE_API_KEY", raising=False)
    out, rows, letters = measured
    cfg = ServeConfig(model=str(serve_model_dir), out=str(out), dtype="fp32", engine="torch")
    engine = build_engine(cfg)
    assert (cfg.candidates, cfg.seed, cfg.max_new_tokens, cfg.candidate_temperature) == (3, 7, 16, 1.3)
    with TestClient(create_app(engine, cfg), base_url="http://127.0.0.1:8000") as client:
        for row, letter in zip(rows, letters):
            fields = records.inputs_of(row)
            body = client.post("/v1/cover-letter", json=fields).json()
            assert body["letter"] == letter and len(body["candidates"]["candidates"]) == 3
            events = []
            with client.stream("POST", "/v1/cover-letter", json={**fields, "stream": True}) as r:
                for line in r.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        events.append(json.loads(line[6:]))
            progress = [e for e in events if e["type"] == "progress"]
            dones = [e["done"] for e in progress]  # candidates finishing together are reported together
            assert {e["total"] for e in progress} == {3} and dones == sorted(set(dones)) and dones[-1] == 3
            assert events.index(progress[-1]) < min(i for i, e in enumerate(events) if e["type"] != "progress")
            assert "".join(e["text"] for e in events if e["type"] == "delta") == letter
            assert events[-1]["type"] == "done" and events[-1]["letter"] == letter
            # OpenAI's and Ollama's shapes carry the same chosen letter
            chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user",
                                                                          "content": json.dumps(fields)}]}).json()
            assert chat["choices"][0]["message"]["content"] == letter
            ollama = client.post("/api/generate", json={"model": "covertune", "prompt": json.dumps(fields),
                                                        "stream": False}).json()
            assert ollama["response"] == letter
