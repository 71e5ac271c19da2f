"""bench/hostile_client.py end to end on a tiny Llama under a real `covertune serve`: every replayed family
gets its status, the fuzzed bodies no 5xx, the server log no traceback."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostile_client.py"


def test_hostile_client_finds_nothing(tiny_model_dir, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("hostile_client", BENCH)
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)
    out = tmp_path / "hostile.json"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--model", str(tiny_model_dir), "--dtype", "fp32", "--cases", "40",
                                      "--max-seconds", "240", "--max-new-tokens-cap", "4", "--max-field-chars", "2000",
                                      "--log", str(tmp_path / "serve.log"), "--json", str(out)])
    assert hostile.main() == 0
    tally = json.loads(out.read_text())
    assert tally["tracebacks"] == 0 and tally["five_xx"] == 0 and tally["unexpected"] == {}
    assert tally["statuses"]["content-type"] == {"415": 16} and tally["statuses"]["lone-surrogate"] == {"422": 4}
    assert sum(tally["statuses"]["fuzz"].values()) == 40
    assert "0 tracebacks, 0 5xx" in capsys.readouterr().out
