"""The form of a letter: a full letter (greeting, body, sign-off with the applicant's name) or a bare body.

The dataset holds both forms, and a fine-tuned model learns from the inputs which one to write (a short
posting gets a body paragraph). ``form`` says what a person gets:

- ``auto``: the letter as the model wrote it (the test split's comparability with the reference).
- ``full``: the chosen letter (the choice among candidates does not look at the form: preferring
  full-form candidates gained nothing on the validation split, docs/RESULTS.md), its greeting or sign-off
  completed around the model's text where it lacks them (``complete``): "Dear {hiring_company} team," where the company is known, else "Dear Hiring
  Manager,", and "Sincerely,\\n{applicant_name}" (the sign-off word alone when the name is not known).
  Nothing is added that the inputs do not hold.
- ``body``: the letter without its greeting and sign-off (``body_of``).

``detect`` tells a letter's form: whether its first line is a greeting, and whether it ends with a sign-off
(a closing word such as "Sincerely," followed by a name) naming the applicant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from covertune.config.options import LetterForm, choices

FORMS: tuple[str, ...] = choices(LetterForm)  # auto, full, body: the --form option's values

_GREETING = re.compile(r"^\s*(?:dear|to whom it may concern|hello|hi|greetings|good (?:morning|afternoon|day))\b"
                       r"[^\n]{0,80}$", re.I)
_CLOSINGS = ("sincerely", "yours sincerely", "sincerely yours", "best regards", "kind regards", "warm regards",
             "warmest regards", "regards", "best", "best wishes", "respectfully", "respectfully yours",
             "yours truly", "yours faithfully", "thank you", "thanks", "with gratitude", "cordially", "cheers")
_CLOSING = re.compile(r"^\s*(?:" + "|".join(re.escape(c) for c in sorted(_CLOSINGS, key=len, reverse=True))
                      + r")\s*[,.!]?\s*$", re.I)
_MISSING = {"", "none", "nan", "n/a"}  # how an empty input field reads (the prompt renders it "None")
SIGN_OFF_WORD = "Sincerely,"
DEFAULT_GREETING = "Dear Hiring Manager,"


def known(value: str | None) -> str:
    """An input field's text, or "" where it is empty or reads as missing."""
    text = (value or "").strip()
    return "" if text.lower() in _MISSING else text


@dataclass(frozen=True)
class Shape:
    """What a letter holds of the full form."""

    greeting: bool  # its first line is a greeting ("Dear ...,")
    sign_off: bool  # it ends with a closing line ("Sincerely,") and a line after it
    name_sign_off: bool  # the lines after the closing name the applicant (any line after it, when no name is known)

    @property
    def full(self) -> bool:
        return self.greeting and self.name_sign_off


def _lines(letter: str) -> list[str]:
    return [line.strip() for line in letter.strip().splitlines() if line.strip()]


def _closing_index(lines: list[str]) -> int | None:
    """The index of the closing line ("Sincerely,") among the last four lines, or None."""
    for k in range(len(lines) - 1, max(len(lines) - 5, -1), -1):
        if _CLOSING.match(lines[k]):
            return k
    return None


def _names(text: str, name: str) -> bool:
    from covertune.metrics.grounding import name_mentioned

    return name_mentioned(text, name) == 1.0


def detect(letter: str, applicant_name: str = "") -> Shape:
    """The shape of ``letter``: greeting, sign-off, and a sign-off naming ``applicant_name``."""
    lines = _lines(letter)
    greeting = bool(lines) and bool(_GREETING.match(lines[0]))
    k = _closing_index(lines)
    sign_off = k is not None and k < len(lines) - 1 and (k > 0 or not greeting)
    name = known(applicant_name)
    after = "\n".join(lines[k + 1:]) if k is not None else ""
    named = sign_off and (_names(after, name) if name else True)
    return Shape(greeting, sign_off, named)


def is_full(letter: str, fields: dict[str, str]) -> bool:
    return detect(letter, fields.get("applicant_name", "")).full


def greeting_for(fields: dict[str, str]) -> str:
    company = known(fields.get("hiring_company"))
    return f"Dear {company} team," if company else DEFAULT_GREETING


def sign_off_for(fields: dict[str, str]) -> str:
    name = known(fields.get("applicant_name"))
    return f"{SIGN_OFF_WORD}\n{name}" if name else SIGN_OFF_WORD


def body_of(letter: str) -> str:
    """The letter without its greeting line and its closing lines (the closing word and what follows it)."""
    lines = letter.strip().splitlines()
    kept = [line.strip() for line in lines]
    nonempty = [i for i, line in enumerate(kept) if line]
    if not nonempty:
        return ""
    start, end = nonempty[0], len(lines)
    if _GREETING.match(kept[start]):
        start += 1
    tail = [i for i in nonempty if i >= start][-5:]
    for i in reversed(tail):
        if _CLOSING.match(kept[i]) and i > start:
            end = i
            break
    return "\n".join(lines[start:end]).strip()


def complete(letter: str, fields: dict[str, str]) -> str:
    """``letter`` in full form: its own greeting and sign-off where it has them, else the ones built from the
    inputs (``greeting_for``, ``sign_off_for``) around the model's text. A closing without the applicant's
    name is replaced by the sign-off with the name (when the inputs give it)."""
    shape = detect(letter, fields.get("applicant_name", ""))
    if shape.full:
        return letter.strip()
    lines = _lines(letter)
    head = lines[0] if shape.greeting else greeting_for(fields)
    tail = "\n".join(lines[_closing_index(lines):]) if shape.name_sign_off else sign_off_for(fields)
    body = body_of(letter)
    return "\n\n".join(p for p in (head, body, tail) if p)


def apply_form(letter: str, form: str, fields: dict[str, str] | None) -> str:
    """``letter`` in ``form`` (auto: unchanged; full: ``complete``; body: ``body_of``)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    if form == "auto" or not letter.strip():
        return letter
    if form == "body":
        return body_of(letter)
    return complete(letter, fields or {})
