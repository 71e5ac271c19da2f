"""bench/candidates_cost.py on a tiny random Llama: the three passes run and count their tokens."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import candidates_cost  # noqa: E402


def test_candidates_cost_runs_on_a_tiny_model(tiny_model_dir, dataset_dir, tmp_path):
    out = tmp_path / "cost.json"
    assert candidates_cost.main(["--data", str(dataset_dir), "--model", str(tiny_model_dir), "--rows", "2",
                                 "--candidates", "3", "--batch-size", "2", "--max-new-tokens", "4",
                                 "--dtype", "fp32", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 < result["greedy"]["new_tokens"] <= 2 * 4
    for k in ("candidates_one_call", "separate_passes"):
        assert result["greedy"]["new_tokens"] < result[k]["new_tokens"] <= 3 * 2 * 4
        assert result[k]["seconds"] > 0
    assert result["setup"]["candidates"] == 3
