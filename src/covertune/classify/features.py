"""What the letter-quality classifier reads: the letter's words (TF-IDF of word unigrams and bigrams,
covertune.classify.model) and these checks, each a number per letter:

| check | value |
| --- | --- |
| ``log_words`` | log(1 + words) |
| ``log_paragraphs`` | log(1 + paragraphs), paragraphs split at blank lines |
| ``repetition`` | share of word trigrams that repeat an earlier one (covertune.data.quality.repetition) |
| ``too_short``, ``no_greeting``, ``no_signoff``, ``generic`` | 1.0 when the data stage's flag is set |
| ``generic_reasons`` | how many reasons the ``generic`` flag gives |
| ``name_mentioned``, ``company_mentioned``, ``job_title_mentioned`` | the grounding check's mentions (1.0 when the input field is empty: nothing to miss) |
| ``skills_coverage`` | share of the applicant's skills the letter names (1.0 without skills) |
| ``numbers_claimed``, ``unsupported_numbers``, ``unsupported_orgs`` | the grounding check's counts |
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from covertune.classify.labels import letter_flags, rule_reasons
from covertune.data.quality import repetition, word_count
from covertune.metrics.grounding import ground_details
from covertune.metrics.summary import is_nan

CHECKS: tuple[str, ...] = (
    "log_words", "log_paragraphs", "repetition", "too_short", "no_greeting", "no_signoff", "generic",
    "generic_reasons", "name_mentioned", "company_mentioned", "job_title_mentioned", "skills_coverage",
    "numbers_claimed", "unsupported_numbers", "unsupported_orgs",
)


@dataclass
class Examined:
    """One letter looked at once: its check values (in ``CHECKS`` order) and its label by the rule."""

    checks: list[float]
    label: int
    reasons: list[str]


def _present(value: float) -> float:
    return 1.0 if is_nan(value) else float(value)


def examine(letter: str, inputs: dict[str, str], flags: list[dict] | None = None, min_words: int = 50) -> Examined:
    """The checks and the rule's label of ``letter`` written for ``inputs`` (the eight fields); ``flags``
    are its data-stage flags when known, else computed on the letter alone."""

    d = ground_details(letter, inputs)
    flags = letter_flags(letter, inputs, min_words, d) if flags is None else flags
    names = {f["flag"] for f in flags}
    generic = next((f["reason"] for f in flags if f["flag"] == "generic"), None)
    n_generic = len(generic.split("; ")) if generic else 0
    paragraphs = [p for p in re.split(r"\n\s*\n", letter) if p.strip()]
    checks = [
        math.log1p(word_count(letter)), math.log1p(len(paragraphs)), repetition(letter),
        *(float(n in names) for n in ("too_short", "no_greeting", "no_signoff", "generic")),
        float(n_generic),
        _present(d["name_mentioned"]), _present(d["company_mentioned"]), _present(d["job_title_mentioned"]),
        _present(d["skills_coverage"]),
        float(len(d["numbers_claimed"])), float(len(d["unsupported_numbers"])), float(len(d["unsupported_orgs"])),
    ]
    reasons = rule_reasons(flags, d)
    return Examined(checks, 0 if reasons else 1, reasons)
