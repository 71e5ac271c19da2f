"""Evaluation subsets, the metric registry, the shared NaN test and number formatter."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from covertune.config.stages import EvaluateConfig
from covertune.metrics import summary
from covertune.stages.evaluate import evaluate


def _letter(n: int) -> str:
    """A letter of exactly n characters."""
    return ("Dear team, I write to apply. " * 40)[:n]


def _eval_csv(path, reference, base, fine_tuned) -> None:
    pd.DataFrame({"prompt": ["p"] * len(reference), "ground_truth": [_letter(n) for n in reference],
                  "base_output": [_letter(n) for n in base],
                  "fine_tuned_output": [_letter(n) for n in fine_tuned]}).to_csv(path, index=False)


def test_subsets_hold_exactly_the_rows_their_lengths_allow(tmp_path):
    # fine-tuned letters of 0, 349, 351, 499 and 501 characters; references and base letters of 600
    _eval_csv(tmp_path / "eval.csv", [600] * 5, [600] * 5, [0, 349, 351, 499, 501])
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    subsets = metrics["subsets"]
    assert {s: subsets[s]["n"] for s in subsets} == {"full": 5, "fair": 3, "strict": 1}
    full = subsets["full"]["models"]["fine_tuned"]
    # the empty letter counts in full: ROUGE-L 0 among the 5 values, and 1 of 5 letters empty
    assert full["rougeL_f"]["n"] == 5 and full["empty_output"]["n"] == 5
    assert full["empty_output"]["mean"] == pytest.approx(0.2)
    results = pd.read_csv(tmp_path / "results_per_example.csv", keep_default_na=False)
    ft = results[results.model == "fine_tuned"].set_index("example")
    assert float(ft.loc[0, "rougeL_f"]) == 0.0
    assert full["rougeL_f"]["mean"] == pytest.approx(ft["rougeL_f"].astype(float).sum() / 5)
    frame = pd.read_csv(tmp_path / "eval.csv", dtype=str, keep_default_na=False)
    masks = summary.subset_masks(frame, ["base_output", "fine_tuned_output"])
    assert {s: list(frame.index[m]) for s, m in masks.items()} == {"full": [0, 1, 2, 3, 4], "fair": [2, 3, 4],
                                                                   "strict": [4]}


def test_subsets_need_the_reference_and_every_model_long_enough():
    frame = pd.DataFrame({"ground_truth": [_letter(n) for n in (349, 351, 501, 600, 600)],
                          "base_output": [_letter(n) for n in (600, 600, 600, 351, 0)],
                          "fine_tuned_output": [_letter(n) for n in (600, 600, 600, 600, 600)]})
    masks = summary.subset_masks(frame, ["base_output", "fine_tuned_output"])
    assert {s: list(frame.index[m]) for s, m in masks.items()} == {"full": [0, 1, 2, 3, 4], "fair": [1, 2, 3],
                                                                   "strict": [2]}
    # with the fine-tuned letters alone, the short base letters no longer matter
    masks = summary.subset_masks(frame, ["fine_tuned_output"])
    assert list(frame.index[masks["strict"]]) == [2, 3, 4]


def test_registry_entries():
    assert summary.METRICS["repetition_ratio"].higher_is_better is False
    assert summary.METRICS["rougeL_f"].higher_is_better is True
    assert summary.METRICS["length_chars"].higher_is_better is None
    assert summary.METRICS["rougeL_f"].format(0.51234) == "0.5123"
    assert summary.METRICS["length_chars"].format(1234.56) == "1234.6"
    assert summary.METRICS["bert_f1"].format(None) == "n/a"
    assert all(m.name == key for key, m in summary.METRICS.items())


@pytest.mark.parametrize("value, missing", [(None, True), (math.nan, True), (np.float64("nan"), True),
                                            (np.float32("nan"), True), (0.0, False), (3, False),
                                            ("nan", False), (np.int64(2), False)])
def test_is_nan(value, missing):
    assert summary.is_nan(value) is missing


def test_fmt():
    assert summary.fmt(0.123456) == "0.1235"
    assert summary.fmt(0.123456, 2) == "0.12"
    assert summary.fmt(math.nan) == "n/a" and summary.fmt(None, 1) == "n/a"
    assert summary.fmt(np.float32(0.5), 3) == "0.500"
