"""Generation engines: the static-cache and continuous-batching paths write the plain path's greedy
letters token for token (a tiny Llama in fp32 on the CPU), rows stopping at different steps included."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covertune.generation import engines
from covertune.core import records
from covertune.generation.decoding import Decoding
from covertune.core.prompt import prompt_ids
from conftest import engine_token_ids, varied_tiny_llama

N_ROWS = 7


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return varied_tiny_llama(tiny_model_dir)


@pytest.fixture(scope="module")
def prompts(tiny, dataset_dir):
    _, tok = tiny
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(N_ROWS)
    recs = [records.from_source_row(row) for row in frame.to_dict("records")]
    return [prompt_ids(r, tok, "raw") for r in recs]


@pytest.fixture
def early_stops(tiny, prompts):
    """Make a token that the plain path writes at different steps of several rows a stop token, so that
    rows end at different steps (a random tiny model rarely writes its EOS); restored afterwards."""
    model, tok = tiny
    plain = engine_token_ids(model, tok, prompts, "plain", N_ROWS)

    def spread(token):  # distinct first positions after the first step
        return len({row.index(token) for row in plain if token in row[1:] and row.index(token) > 0})

    token = max(sorted({t for row in plain for t in row}), key=spread)
    assert spread(token) >= 2
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [token]
    yield [token]
    model.generation_config.eos_token_id = old


@pytest.mark.parametrize("engine,batch_size", [("static", 3), ("static", N_ROWS), ("continuous", 3),
                                               ("continuous", 2)])
def test_greedy_letters_equal_the_plain_path(tiny, prompts, early_stops, engine, batch_size):
    model, tok = tiny
    plain = engine_token_ids(model, tok, prompts, "plain", batch_size)
    lengths = {len(r) for r in plain}
    assert len(lengths) > 1 and min(lengths) < 20  # some rows stopped early, at different steps
    assert all(r[-1] in early_stops for r in plain if len(r) < 20)
    assert engine_token_ids(model, tok, prompts, engine, batch_size) == plain


def test_static_caches_follow_the_batches(tiny, prompts, early_stops, monkeypatch):
    """With a short rounding step, later (shorter) batches get shorter static caches, and the letters
    are still plain's."""
    model, tok = tiny
    monkeypatch.setattr(engines, "STATIC_CACHE_STEP", 4)
    monkeypatch.setattr(engines, "STATIC_SHRINK", 0.999)
    made = []
    real = engines._static_cache
    monkeypatch.setattr(engines, "_static_cache",
                        lambda model, caches, length: made.append(length) or real(model, caches, length))
    widths = sorted((len(p) for p in prompts), reverse=True)
    assert widths[0] - widths[-1] >= 8, widths  # the rows differ enough for two cache lengths
    plain = engine_token_ids(model, tok, prompts, "plain", 2)
    assert engine_token_ids(model, tok, prompts, "static", 2) == plain
    assert made[0] == widths[0] + 20  # the first batch: its widest prompt + 20 new tokens, not rounded past
    assert len(set(made)) >= 2 and made == sorted(made, reverse=True)


@pytest.mark.parametrize("need,made,longest,expected", [
    (446, [], 446, 446),  # the first batch: rounded up, but never past the run's longest
    (245, [446], 446, 256),  # much shorter: a new, shorter cache
    (400, [446], 446, 446),  # not short enough to be worth a compilation: the one that fits
    (200, [256, 446], 446, 256),  # a made one fits and a new one (256) would not be shorter
    (130, [192, 256, 446], 446, 192),  # three caches made: the shortest that fits
    (500, [446], 446, 500),  # none fits: a new one, whatever the count
])
def test_cache_length(need, made, longest, expected):
    assert engines.cache_length(need, made, longest) == expected


def test_auto_is_plain_on_the_cpu(tiny, prompts, monkeypatch):
    model, tok = tiny
    assert engines.resolve("auto", model) == "plain"
    # the size rule picks static only on a CUDA GPU: even a model above the threshold stays plain here
    monkeypatch.setattr(engines, "STATIC_MIN_PARAMS", 1)
    assert engines._parameters(model) > 1 and engines.resolve("auto", model) == "plain"
    assert (engine_token_ids(model, tok, prompts[:3], "auto", 2)
            == engine_token_ids(model, tok, prompts[:3], "plain", 2))


def test_engine_errors(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.resolve("vllm", model)
    with pytest.raises(ValueError, match="repetition penalty"):
        engines.resolve("continuous", model, Decoding(repetition_penalty=1.2))
    assert engines.resolve("static", model, Decoding(repetition_penalty=1.2)) == "static"


def test_generate_stage_with_each_engine(tiny_model_dir, dataset_dir, tmp_path):
    """`covertune generate --engine static|continuous` writes the plain engine's eval.csv and journal (new
    token counts included) and records the engine in generate_stats.json; auto is plain on the CPU; an
    unknown engine is a clear error."""
    from covertune.core import io
    from covertune.config.stages import GenerateConfig
    from covertune.stages.generate import generate

    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(3)
    rows = []
    for n, row in enumerate(frame.to_dict("records")):
        rec = records.from_source_row(row)
        rec.update(id=f"test-{n}", flags=[], missing_fields=[])
        rows.append(rec)
    io.write_jsonl(tmp_path / "data" / "test.jsonl", rows)
    seen = {}
    for engine in ("plain", "static", "continuous"):
        generate(GenerateConfig(model=str(tiny_model_dir), out=str(tmp_path), models=["base"], max_new_tokens=6,
                                batch_size=2, dtype="fp32", engine=engine, force=True))
        stats = json.loads((tmp_path / "generate_stats.json").read_text())
        assert stats["base"]["engine"] == engine and stats["base"]["letters"] == 3
        journal = io.read_jsonl(tmp_path / ".generate" / "test.base.jsonl")[1:]
        seen[engine] = ((tmp_path / "eval.csv").read_text(encoding="utf-8"),
                        sorted((r["index"], r["new_tokens"], r["output"]) for r in journal))
    assert seen["static"] == seen["plain"] and seen["continuous"] == seen["plain"]
    generate(GenerateConfig(model=str(tiny_model_dir), out=str(tmp_path), models=["base"], max_new_tokens=6,
                            batch_size=2, dtype="fp32", engine="auto", force=True))
    assert json.loads((tmp_path / "generate_stats.json").read_text())["base"]["engine"] == "plain"  # CPU: plain
    with pytest.raises(ValueError, match="engine must be one of"):
        generate(GenerateConfig(model=str(tiny_model_dir), out=str(tmp_path), models=["base"], engine="fast"))
