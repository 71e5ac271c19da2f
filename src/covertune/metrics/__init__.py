"""Metrics for generated cover letters: ROUGE-L, BERTScore, repetition, grounding, and their summaries.

``evaluate.py`` is the stage function that reads an eval.csv and writes the per-example results, the
summary table and metrics.json; the other modules are its components.
"""
