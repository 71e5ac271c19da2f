"""ROUGE-L and repetition: the reference's published numbers on its own cleaned outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l, rouge_l_many

# exact means on reference-run/cleaned_eval.csv (349 rows); the reference published 0.314 and 0.519
ROUGE_BASE = 0.3143679378916034
ROUGE_FINE_TUNED = 0.5188970823223442
REPETITION_BASE = 0.4282253913894293
REPETITION_FINE_TUNED = 0.36145704097118847


@pytest.fixture(scope="module")
def cleaned(reference_dir):
    return pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False)


def test_rouge_l_reproduces_the_reference(cleaned):
    assert len(cleaned) == 349
    base = sum(rouge_l_many(list(cleaned.ground_truth), list(cleaned.base_output))) / len(cleaned)
    tuned = sum(rouge_l_many(list(cleaned.ground_truth), list(cleaned.fine_tuned_output))) / len(cleaned)
    assert base == pytest.approx(ROUGE_BASE, abs=1e-9)
    assert tuned == pytest.approx(ROUGE_FINE_TUNED, abs=1e-9)
    assert (round(base, 3), round(tuned, 3)) == (0.314, 0.519)


def test_repetition_means_on_the_reference(cleaned):
    base = sum(map(repetition_ratio, cleaned.base_output)) / len(cleaned)
    tuned = sum(map(repetition_ratio, cleaned.fine_tuned_output)) / len(cleaned)
    assert base == pytest.approx(REPETITION_BASE, abs=1e-9)
    assert tuned == pytest.approx(REPETITION_FINE_TUNED, abs=1e-9)


def test_repetition_ratio_definition():
    assert repetition_ratio("") == 0.0
    assert repetition_ratio("   \n") == 0.0
    assert repetition_ratio("one two three") == 0.0
    assert repetition_ratio("The the THE cat") == pytest.approx(1 - 2 / 4)  # lowercased
    assert repetition_ratio("data, data") == 0.0  # punctuation stays part of the word


def test_rouge_l_edges():
    assert rouge_l("a letter of thanks", "a letter of thanks") == 1.0
    assert rouge_l("a letter of thanks", "") == 0.0
    assert 0 < rouge_l("a letter of thanks", "thanks for the letter") < 1
    with pytest.raises(ValueError):
        rouge_l_many(["a"], [])
