"""Cleaning of the target letter, one named rule at a time, counting the letters each rule changed.

Only the letter is cleaned; input fields stay byte for byte as loaded (the prompt must match the
reference's). First the reference's rules, in its order:

1. ``split_samples``: split at ``"\\n### Sample"`` and keep the first part that contains "Dear" or
   is longer than 100 characters (the first part if none is); the rest of a ``### Sample 2`` header
   line goes with the marker (the reference kept it, a difference only when a later part is kept);
2. ``drop_hash_lines``: drop lines that start (after indentation) with two or more ``#``;
3. ``collapse_blank_lines``: a run of blank lines (empty or white space only) becomes one blank line;
4. ``strip``: white space at both ends removed.

Then normalisation of white space and punctuation that changes no word:

5. ``line_endings``: ``\\r\\n`` and ``\\r`` become ``\\n``;
6. ``unicode_spaces``: no-break, thin and other Unicode spaces become a space; zero-width characters
   and byte-order marks are removed;
7. ``curly_quotes``: curly single and double quotes become straight ``'`` and ``"``;
8. ``repeated_spaces``: runs of spaces/tabs become one space; spaces at line starts and ends go;
9. ``space_before_punctuation``: spaces before ``, . ; : ! ?`` go (not before an ellipsis or
   ``.NET``-like words).

Rules 3 and 4 run again at the end, as normalisation can leave blank lines or edge spaces behind.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Iterable

from covertune.core.records import TARGET_FIELD

RAW_FIELD = "cover_letter_raw"  # the letter as loaded, kept beside the cleaned one
SAMPLE_MARKER = "\n### Sample"
_SAMPLE_SPLIT = re.compile(re.escape(SAMPLE_MARKER) + r"[^\n]*")


def split_samples(text: str) -> str:
    if SAMPLE_MARKER not in text:
        return text
    parts = _SAMPLE_SPLIT.split(text)
    for part in parts:
        if "Dear" in part or len(part) > 100:
            return part
    return parts[0]


def drop_hash_lines(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if not line.lstrip().startswith("##"))


_BLANK_RUN = re.compile(r"\n[^\S\n]*\n(?:[^\S\n]*\n)+")  # two or more blank lines


def collapse_blank_lines(text: str) -> str:
    return _BLANK_RUN.sub("\n\n", text)


def strip(text: str) -> str:
    return text.strip()


def line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_UNICODE_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")


def unicode_spaces(text: str) -> str:
    return _ZERO_WIDTH.sub("", _UNICODE_SPACES.sub(" ", text))


_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"'})


def curly_quotes(text: str) -> str:
    return text.translate(_QUOTES)


_SPACE_RUN = re.compile(r"[ \t]{2,}|\t")
_LINE_EDGES = re.compile(r"^[ \t]+|[ \t]+$", re.M)


def repeated_spaces(text: str) -> str:
    return _LINE_EDGES.sub("", _SPACE_RUN.sub(" ", text))


# a space before , ; : ! ? or a single full stop, when the mark ends a word (followed by white
# space, the end, a quote or a bracket): "skills , and" -> "skills, and"; "… .NET" and " ..." stay
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=\S)[ \t]+([,;:!?]|\.(?!\.))(?=\s|$|[\"')\]])")


def space_before_punctuation(text: str) -> str:
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


REFERENCE_RULES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("split_samples", split_samples),
    ("drop_hash_lines", drop_hash_lines),
    ("collapse_blank_lines", collapse_blank_lines),
    ("strip", strip),
)
NORMALISE_RULES: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("line_endings", line_endings),
    ("unicode_spaces", unicode_spaces),
    ("curly_quotes", curly_quotes),
    ("repeated_spaces", repeated_spaces),
    ("space_before_punctuation", space_before_punctuation),
)
RULES = (*REFERENCE_RULES, *NORMALISE_RULES)
RULE_NAMES: tuple[str, ...] = tuple(name for name, _ in RULES)
_FINAL = (("collapse_blank_lines", collapse_blank_lines), ("strip", strip))


def reference_clean(text: str) -> str:
    """The reference's cleaning alone (rules 1-4)."""
    for _, rule in REFERENCE_RULES:
        text = rule(text)
    return text


def clean_letter(text: str) -> tuple[str, list[str]]:
    """The cleaned letter and the names of the rules that changed it (each name once, rule order)."""
    fired: list[str] = []
    for name, rule in (*RULES, *_FINAL):
        new = rule(text)
        if new != text and name not in fired:
            fired.append(name)
        text = new
    return text, sorted(fired, key=RULE_NAMES.index)


def clean_records(records: Iterable[dict]) -> Counter:
    """Clean each record's letter in place (the original kept under ``cover_letter_raw``); returns
    rule name -> number of letters it changed."""
    counts: Counter = Counter({name: 0 for name in RULE_NAMES})
    for rec in records:
        raw = rec[TARGET_FIELD]
        rec[RAW_FIELD] = raw
        rec[TARGET_FIELD], fired = clean_letter(raw)
        counts.update(fired)
    return counts
