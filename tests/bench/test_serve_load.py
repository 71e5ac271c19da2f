"""bench/serve_load.py end to end on a tiny Llama: every request answered, the report's fields present."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serve_load.py"


def test_serve_load_runs(tiny_model_dir, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    out = tmp_path / "load.json"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--model", str(tiny_model_dir), "--dtype", "fp32",
                                      "--clients", "3", "--requests", "2", "--max-new-tokens", "4",
                                      "--batch-sizes", "1,3", "--batch-window-ms", "50", "--max-seconds", "120",
                                      "--json", str(out)])
    serve_load.main()
    report = json.loads(out.read_text())
    one, batched = report["results"]
    for r in (one, batched):
        assert r["errors"] == 0 and r["letters"] == 6 and r["new_tokens"] <= 6 * 4
        assert r["p50_s"] <= r["p95_s"] <= r["p99_s"]
    assert one["mean_batch_rows"] == 1.0 and one["batches"] == 6 and one["gain_letters_per_s"] == 1.0
    assert batched["batches"] < 6  # concurrent requests shared batches
    assert "max batch" in capsys.readouterr().out and report["env"]["model"] == str(tiny_model_dir)
