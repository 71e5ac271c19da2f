"""bench/generate_embedded.py on a tiny Llama and adapter (CPU, fp32): every variant in one process,
the letters compared with the first variant's (the GPU figures in docs/PERFORMANCE.md come from the same
code on the embedded model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from covertune.core import io, records

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import generate_embedded  # noqa: E402


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir, dataset_dir, make_tiny_adapter):
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(5)
    (tmp_path / "data").mkdir()
    io.write_jsonl(tmp_path / "data" / "test.jsonl",
                   [records.from_source_row(row) for row in frame.to_dict("records")])
    make_tiny_adapter(tiny_model_dir, tmp_path / "adapter", quantization="none")
    return tmp_path


def test_variants_in_one_process(run_dir, tiny_model_dir, monkeypatch):
    out = run_dir / "bench.json"
    variants = ["plain:5:merged", "plain:2:adapter", "static:2:merged:2", "plain:5:merged:1:eager",
                "plain:5:merged:1:sdpa-gqa", "static:2:merged:1:sdpa-repeat"]
    monkeypatch.setattr(sys, "argv", ["generate_embedded.py", "--run", str(run_dir), "--model", str(tiny_model_dir),
                                      "--max-new-tokens", "6", "--json", str(out),
                                      "--letters", str(run_dir / "letters.json"), "--variants", *variants])
    generate_embedded.main()
    got = json.loads(out.read_text())
    assert [len(got["runs"][v]) for v in variants] == [1, 1, 2, 1, 1, 1]  # passes per variant
    for v in variants:
        assert all(p["letters"] == 5 and p["new_tokens"] > 0 and "error" not in p for p in got["runs"][v])
    letters = json.loads((run_dir / "letters.json").read_text())
    assert set(letters) == set(variants) and all(len(x) == 5 for x in letters.values())
    # the unmerged adapter, the static engine and the other attention paths write the first variant's letters
    for v in variants[1:]:
        assert got[f"same_as_plain:5:merged_{v}"]["identical_letters"] == 5, v


def test_a_bad_variant_is_refused(run_dir, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["generate_embedded.py", "--run", str(run_dir), "--model", str(tiny_model_dir),
                                      "--json", str(run_dir / "b.json"), "--letters", str(run_dir / "l.json"),
                                      "--variants", "plain:5:merged:1:flash"])
    with pytest.raises(SystemExit, match="attention must be one of"):
        generate_embedded.main()


def test_attention_is_set_for_the_variant_and_put_back(tiny_model_dir, monkeypatch):
    import os

    from covertune.generation import engines
    from covertune.models.load import load_model, load_tokenizer

    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok, attn_implementation="eager")
    with generate_embedded.attention_implementation(model, "sdpa-gqa"):
        assert model.config._attn_implementation == "sdpa"
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
    assert model.config._attn_implementation == "eager"  # what it was, not sdpa
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    with generate_embedded.attention_implementation(model, "sdpa-repeat"):
        assert model.config._attn_implementation == "sdpa" and not engines.STATIC_PACK_GQA
    assert model.config._attn_implementation == "eager" and engines.STATIC_PACK_GQA
