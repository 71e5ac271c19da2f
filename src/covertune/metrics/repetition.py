"""Repetition ratio as the reference defined it: 1 - unique words / all words, where words are the
lowercased text split on white space; 0.0 for an empty text. 0 means no word repeats; values near 1 mean a
few words repeated over and over."""

from __future__ import annotations


def repetition_ratio(text: str) -> float:
    words = text.lower().split()
    if not words:
        return 0.0
    return 1.0 - len(set(words)) / len(words)
