"""scripts/results_table.py: one row per registry metric, values as the registry formats them."""

from __future__ import annotations

import runpy
from pathlib import Path

import pandas as pd

from covertune.config import EvaluateConfig
from covertune.metrics.evaluate import evaluate
from covertune.metrics.summary import METRICS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "results_table.py"


def test_rows_follow_the_registry(tmp_path, capsys):
    pd.DataFrame({"prompt": ["p", "p"], "ground_truth": ["Dear team, I apply for this role.", "Dear all, hi."],
                  "base_output": ["Dear team, I apply.", "Hello"],
                  "fine_tuned_output": ["Dear team, I apply for the role.", "Dear all, hello."]}
                 ).to_csv(tmp_path / "eval.csv", index=False)
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))
    capsys.readouterr()
    runpy.run_path(str(SCRIPT))["main"]([f"mine={tmp_path}"])
    text = capsys.readouterr().out
    full = text.split("**full**")[1].split("**fair**")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in full.splitlines()
            if line.startswith("| ") and not line.startswith("| metric")}
    summary = pd.read_csv(tmp_path / "eval_summary.csv")
    expected = [k for k in METRICS if k in set(summary.metric)]
    assert len(rows) == len(expected) >= 10
    for key in expected:
        metric = METRICS[key]
        label = metric.label + (" ↓" if metric.higher_is_better is False else "")
        for model, cell in zip(("base", "fine_tuned"), rows[label]):
            value = summary[(summary.subset == "full") & (summary.model == model) & (summary.metric == key)]["mean"]
            assert cell.rstrip(" |") == metric.format(value.iloc[0]), (key, model)
