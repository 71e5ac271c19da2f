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

``parts`` cuts a letter into greeting, body and closing, on lines of their own or run into the body's first
or last line ("Dear Hiring Manager, I am writing ... my application. Sincerely, Jane Doe"); ``detect`` tells
from them whether the letter opens with a greeting and ends with a sign-off (a closing word such as
"Sincerely," followed by a name) naming the applicant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from covertune.config.options import LetterForm, choices

FORMS: tuple[str, ...] = choices(LetterForm)  # auto, full, body: the --form option's values

_GREETING_WORDS = r"(?:dear|to whom it may concern|hello|hi|greetings|good (?:morning|afternoon|day))\b"
_GREETING = re.compile(r"^\s*" + _GREETING_WORDS + r"[^\n]{0,80}$", re.I)
# a greeting that opens the first line and runs on into the body: "Dear Hiring Manager, I am writing ..."
_GREETING_INLINE = re.compile(r"^\s*(" + _GREETING_WORDS + r"(?:(?:mr|ms|mrs|dr|prof)\.|[^\n,:;.!?]){0,60}[,:])[ \t]+(\S.*)$", re.I | re.S)
_CLOSINGS = ("sincerely", "yours sincerely", "sincerely yours", "best regards", "kind regards", "warm regards",
             "warmest regards", "regards", "best", "best wishes", "respectfully", "respectfully yours",
             "yours truly", "yours faithfully", "thank you", "thanks", "with gratitude", "cordially", "cheers")
_CLOSING_WORDS = "(?:" + "|".join(re.escape(c) for c in sorted(_CLOSINGS, key=len, reverse=True)) + ")"
_CLOSING = re.compile(r"^\s*" + _CLOSING_WORDS + r"\s*[,.!]?\s*$", re.I)
# a closing that ends the body's last sentence's line: "... my application. Sincerely, Maria Gomez" (the name
# on the same line, a run of capitalised words) or "... my application. Sincerely," with the name on the next line
_NAME = r"(?-i:[A-Z][\w.'-]*(?:[ \t]+[A-Z][\w.'-]*){0,4})"
_CLOSING_INLINE = re.compile(r"^(.*[.!?])[ \t]+(" + _CLOSING_WORDS + r")[ \t]*,[ \t]*(" + _NAME + r")?[ \t]*$", re.I)
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


@dataclass(frozen=True)
class Parts:
    """A letter cut into its greeting, its body and its closing lines (the closing word and what follows it);
    ``greeting`` and ``closing`` are "" where the letter has none."""

    greeting: str
    body: str
    closing: str
    inline: bool  # the greeting or the closing was cut out of a line of the body


def _greeting_and_rest(text: str) -> tuple[str, str, bool]:
    first, _, rest = text.partition("\n")
    if _GREETING.match(first):
        return first.strip(), rest.strip(), False
    inline = _GREETING_INLINE.match(first)
    if inline:
        return inline.group(1).strip(), (inline.group(2) + "\n" + rest).strip(), True
    return "", text, False


def _body_and_closing(text: str) -> tuple[str, str, bool]:
    lines = text.splitlines()
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    last = nonempty[-5:]  # the closing is looked for among the last five lines
    for i in reversed(last):
        if _CLOSING.match(lines[i]) and i != nonempty[0]:
            closing = "\n".join(line.strip() for line in lines[i:] if line.strip())
            return "\n".join(lines[:i]).strip(), closing, False
    for i in reversed(last[-2:]):  # "... application. Sincerely, Jane Doe" or "... application. Sincerely," + name
        inline = _CLOSING_INLINE.match(lines[i].strip())
        if inline and (inline.group(3) or i != nonempty[-1]):
            after = [inline.group(3) or ""] + [line.strip() for line in lines[i + 1:]]
            closing = "\n".join([inline.group(2) + ","] + [line for line in after if line])
            body = "\n".join(lines[:i] + [inline.group(1)]).strip()
            return body, closing, True
    return text, "", False


def parts(letter: str) -> Parts:
    """``letter``'s greeting, body and closing, whether each stands on lines of its own or opens (greeting) or
    ends (closing) a line of the body, as the model often writes a one-paragraph letter."""
    text = letter.strip()
    if not text:
        return Parts("", "", "", False)
    greeting, rest, inline_greeting = _greeting_and_rest(text)
    if not rest:
        return Parts(greeting, "", "", inline_greeting)
    body, closing, inline_closing = _body_and_closing(rest)
    return Parts(greeting, body, closing, inline_greeting or inline_closing)


def _names(text: str, name: str) -> bool:
    from covertune.metrics.grounding import name_mentioned

    return name_mentioned(text, name) == 1.0


def detect(letter: str, applicant_name: str = "") -> Shape:
    """The shape of ``letter``: greeting, sign-off, and a sign-off naming ``applicant_name``."""
    return _shape(parts(letter), applicant_name)


def _shape(cut: Parts, applicant_name: str) -> Shape:
    after = cut.closing.partition("\n")[2]
    sign_off = bool(after.strip())
    name = known(applicant_name)
    named = sign_off and (_names(after, name) if name else True)
    return Shape(bool(cut.greeting), sign_off, named)


def is_full(letter: str, fields: dict[str, str]) -> bool:
    return detect(letter, fields.get("applicant_name", "")).full


def greeting_for(fields: dict[str, str]) -> str:
    company = known(fields.get("hiring_company"))
    return f"Dear {company} team," if company else DEFAULT_GREETING


def sign_off_for(fields: dict[str, str]) -> str:
    name = known(fields.get("applicant_name"))
    return f"{SIGN_OFF_WORD}\n{name}" if name else SIGN_OFF_WORD


def body_of(letter: str) -> str:
    """The letter without its greeting and its closing lines (the closing word and what follows it)."""
    return parts(letter).body


def complete(letter: str, fields: dict[str, str]) -> str:
    """``letter`` in full form: its own greeting and sign-off where it has them (on lines of their own, cut out of
    the body's first or last line where the model ran them on), else the ones built from the inputs
    (``greeting_for``, ``sign_off_for``) around the model's text. A closing without the applicant's name is
    replaced by the sign-off with the name (when the inputs give it)."""
    cut = parts(letter)
    shape = _shape(cut, fields.get("applicant_name", ""))
    if shape.full and not cut.inline:
        return letter.strip()
    head = cut.greeting or greeting_for(fields)
    tail = cut.closing if shape.name_sign_off else sign_off_for(fields)
    return "\n\n".join(p for p in (head, cut.body, tail) if p)


def apply_form(letter: str, form: str, fields: dict[str, str] | None) -> str:
    """``letter`` in ``form`` (auto: unchanged; full: ``complete``; body: ``body_of``)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    if form == "auto" or not letter.strip():
        return letter
    if form == "body":
        return body_of(letter)
    return complete(letter, fields or {})
