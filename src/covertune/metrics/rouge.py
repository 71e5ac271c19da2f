"""ROUGE-L F1 per example, as the reference computed it: rouge-score's rougeL, no stemmer, its default
tokenizer; target = the reference letter, prediction = the model's letter. Summaries use the plain mean."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F-measure of one prediction against its reference (0.0 when either is empty)."""
    return float(_scorer().score(target=reference, prediction=prediction)["rougeL"].fmeasure)


def rouge_l_many(references: list[str], predictions: list[str]) -> list[float]:
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    return [rouge_l(r, p) for r, p in zip(references, predictions)]
