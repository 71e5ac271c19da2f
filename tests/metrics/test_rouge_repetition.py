"""ROUGE-L and repetition: the reference's published numbers on its own cleaned outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l, rouge_l_many, rouge_l_tokens, tokens

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


def test_rouge_l_equals_rouge_scores_own_scorer_row_by_row(cleaned):
    """The LCS comes from rapidfuzz; every score equals rouge-score's RougeScorer (its pure-Python LCS
    table) exactly, on the 349 reference rows both ways round and on letters scored against each other
    (MBR's pairs), and on texts with no word at all."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    truth, tuned, base = list(cleaned.ground_truth), list(cleaned.fine_tuned_output), list(cleaned.base_output)
    pairs = list(zip(truth, tuned)) + list(zip(tuned, truth)) + list(zip(tuned[:60], base[:60]))
    pairs += [("", "a letter"), ("a letter", ""), ("!!! ...", "a letter"), ("Dear team,", "dear TEAM")]
    ours = [rouge_l(r, p) for r, p in pairs]
    theirs = [scorer.score(target=r, prediction=p)["rougeL"].fmeasure for r, p in pairs]
    assert ours == theirs
    assert sum(0.0 < x < 1.0 for x in ours) > 600  # real partial overlaps, not only the edge cases
    assert rouge_l("Dear team,", "dear TEAM") == 1.0 and rouge_l("!!! ...", "a letter") == 0.0
    assert rouge_l_tokens(tokens(truth[0]), tokens(tuned[0])) == ours[0]


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
