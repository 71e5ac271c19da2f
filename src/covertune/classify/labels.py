"""The labelling rule of the letter-quality classifier: which letters are good training targets.

A letter is **negative** (0) when any of these holds, and **positive** (1) otherwise:

| reason | from |
| --- | --- |
| ``too_short`` | the data stage's flag: fewer than ``min_words`` words (50 by default) |
| ``generic`` | the data stage's flag: a placeholder ("[Your Name]"), an AI disclaimer, more than 20% of its word trigrams repeated, a repeated sentence, neither the company nor the applicant named, or the same letter serving three or more input sets (covertune.data.quality) |
| ``unsupported number`` | the grounding check: a number the inputs do not support (covertune.metrics.grounding) |
| ``unsupported organisation`` | the grounding check: an organisation the inputs do not name |
| ``company missing`` | the grounding check: the hiring company is given but the letter does not name it |

A missing greeting or sign-off is no reason: body-only letters are a form the dataset has on purpose,
and a missing applicant name goes with it (a body-only letter is not signed). A record written by the
data stage is labelled from its stored flags (letter reuse was counted across the whole dataset); any
other letter (a generated candidate) from flags computed on it alone.
"""

from __future__ import annotations

from covertune.core.records import FLAGS_FIELD, TARGET_FIELD, inputs_of
from covertune.data.quality import flag_record
from covertune.metrics.grounding import ground_details

RULE_FLAGS: tuple[str, ...] = ("too_short", "generic")


def letter_flags(letter: str, inputs: dict[str, str], min_words: int = 50,
                 grounding: dict | None = None) -> list[dict]:
    """The data stage's flags of a letter on its own (no letter reuse across a dataset); ``grounding``: its
    ground_details when the caller has them (not computed again)."""
    return flag_record({**inputs, TARGET_FIELD: letter}, min_words, grounding=grounding)


def rule_reasons(flags: list[dict], grounding: dict) -> list[str]:
    """Why a letter is negative by the rule (empty: positive): its flags ([{"flag", "reason"}]) and its
    grounding findings (covertune.metrics.grounding.ground_details)."""
    reasons = [f"{f['flag']}: {f['reason']}" for f in flags if f["flag"] in RULE_FLAGS]
    reasons += [f"unsupported number: {x}" for x in grounding["unsupported_numbers"]]
    reasons += [f"unsupported organisation: {x}" for x in grounding["unsupported_orgs"]]
    if grounding["company_mentioned"] == 0.0:
        reasons.append("company missing")
    return reasons


def label_letter(letter: str, inputs: dict[str, str], flags: list[dict] | None = None,
                 min_words: int = 50) -> tuple[int, list[str]]:
    """(1 positive / 0 negative, the reasons it is negative) for a letter written for ``inputs``;
    ``flags`` are its data-stage flags when known, else computed on the letter alone."""

    d = ground_details(letter, inputs)
    flags = letter_flags(letter, inputs, min_words, d) if flags is None else flags
    reasons = rule_reasons(flags, d)
    return (0 if reasons else 1), reasons


def label_record(rec: dict, min_words: int = 50) -> tuple[int, list[str]]:
    """A data-stage record's label and reasons (its stored flags when it has them)."""
    flags = rec.get(FLAGS_FIELD)
    return label_letter(rec[TARGET_FIELD], inputs_of(rec), flags, min_words)


