"""bench/rerank.py on the shipped model's committed validation candidates: a reranker fitted on some prompts,
measured on the others beside the shipped rule and the oracle, adopted only by its rule."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATASET_DIR

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ROOT / "docs/results/shipped_smol_llamacpp/candidates_validation.fine_tuned.jsonl.gz"
pytestmark = pytest.mark.skipif(not (DATASET_DIR / "train.csv").exists(), reason="needs the shared dataset")


def test_rerank_fits_on_one_set_of_prompts_and_chooses_on_another(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from select_utilities import choose_all, score_letters

    from covertune.core import io
    from covertune.core.records import inputs_of

    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "covertune", "data", "--preset", "smol", "--data", str(DATASET_DIR),
                    "--out", str(run)], check=True, capture_output=True)
    rows = [json.loads(line) for line in gzip.open(CANDIDATES, "rt")]
    assert len(rows) == len(io.read_jsonl(run / "data" / "validation.jsonl"))  # the committed candidates' split
    io.write_jsonl(tmp_path / "fit.jsonl", rows[:50])  # each row keeps its index into validation.jsonl
    io.write_jsonl(tmp_path / "held.jsonl", rows[50:])
    data = str(run / "data" / "validation.jsonl")
    done = subprocess.run([sys.executable, "bench/rerank.py", "--train-data", data, "--train-candidates",
                           str(tmp_path / "fit.jsonl"), "--val-data", data, "--val-candidates",
                           str(tmp_path / "held.jsonl"), "--json", str(tmp_path / "rerank.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads((tmp_path / "rerank.json").read_text())
    val = out["validation"]
    assert out["train_prompts"] == 50 and out["validation_prompts"] == 31 and out["train_candidates"] == 800
    assert set(val) == {"shipped rule", "oracle (same pool)", "ridge", "boosted-trees"}
    for rule in ("shipped rule", "ridge", "boosted-trees"):  # the oracle bounds every rule choosing in its pool
        assert val[rule]["rouge_l"] <= val["oracle (same pool)"]["rouge_l"]
        assert val[rule]["letters_with_unsupported_numbers"] == 0  # the pool holds the grounded candidates
    # the shipped rule's figures are what the product's own choice (skills weight 0.2) gives on these prompts
    records = io.read_jsonl(data)
    held = [records[r["index"]] for r in rows[50:]]
    letters = [r["candidates"][choose_all([c["letter"] for c in r["candidates"]], inputs_of(rec), rec["cover_letter"],
                                          [0.2], None)["grounded-mbr+skills:0.2"]]["letter"]
               for r, rec in zip(rows[50:], held)]
    assert score_letters(letters, held, False) == val["shipped rule"]
    best = val[out["best"]]
    assert out["adopted"] == (best["rouge_l"] >= val["shipped rule"]["rouge_l"] + out["margin"]
                              and best["letters_with_unsupported_numbers"]
                              <= val["shipped rule"]["letters_with_unsupported_numbers"])
    assert set(out["ridge_coefficients"]) == set(out["features"])
