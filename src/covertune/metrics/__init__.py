"""Metrics for generated cover letters: ROUGE-L, BERTScore, repetition, grounding, their summaries, and
one letter's scores and reading an eval.csv (evaluate). The command is ``covertune.stages.evaluate``."""

__all__ = ["rouge", "bertscore", "repetition", "grounding", "summary", "evaluate"]
