"""Per-row quality flags, each with a reason. Flags describe; they never change a record.

| flag | when |
| --- | --- |
| ``too_short`` | the cleaned letter has fewer than ``min_words`` words |
| ``no_greeting`` | the letter does not open with a salutation ("Dear ...", "To whom it may concern", "Hello") |
| ``no_signoff`` | the letter does not close with a valediction ("Sincerely,", "Best regards," ...) |
| ``generic`` | it looks generic or machine-written: a placeholder ("[Your Name]"), an AI disclaimer, heavy repetition, neither the company nor the applicant named, or the same letter text serving rows with different inputs (``REUSE_MIN`` or more) |
| ``collapsed_bullets`` | "Preferred Qualifications" holds list items run together on one line: inline bullet marks, several numbered items in one line, items glued without a space, or comma-joined capitalised items |
| ``empty_inputs`` | some input fields are empty |
| ``ungrounded`` | the letter claims a number or names an organisation that its inputs do not support (the grounding check of covertune.metrics.grounding, as ``evaluate`` scores generated letters) |
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from covertune.core.records import (FLAG_NAMES, FLAGS_FIELD, INPUT_FIELDS, MISSING_FIELD, SOURCE_COLUMNS,
                                    TARGET_FIELD, inputs_of)
from covertune.metrics.grounding import number_claims, unsupported_orgs

# FLAG_NAMES is declared with the record's keys (covertune.core.records): the train stage's options name them too
REUSE_MIN = 3  # a letter text that is the target of this many distinct input sets is a template
REPETITION_MAX = 0.2  # share of repeated word trigrams above which a letter is repetitive
COLUMN_OF = {v: k for k, v in SOURCE_COLUMNS.items()}

_GREETING = re.compile(r"^\s*(dear\b|to whom it may concern|hello\b|hi\b|greetings\b|good (morning|afternoon)\b)",
                       re.I)
_VALEDICTION = (r"(yours\s+(sincerely|faithfully|truly)|sincerely(\s+yours)?|(best|kind|warm|warmest|"
                r"with\s+kind)\s+regards|regards|best\s+wishes|best|respectfully(\s+yours)?|cordially|"
                r"with\s+(gratitude|appreciation)|thank\s+you|many\s+thanks|thanks)")
# a valediction at a line start or after a sentence, then a comma or line break, then at most a few
# short lines (name, title, contact) to the end
_SIGNOFF = re.compile(r"(?:^|\n|[.!?]\s+)\s*" + _VALEDICTION + r"\s*(,|!|\.?\s*\n|\.?$)[^\n]{0,80}(\n[^\n]{0,80}){0,4}$",
                      re.I)
_PLACEHOLDER = re.compile(r"\[[^\]\n]{2,40}\]|\{[^}\n]{2,40}\}|<[A-Za-z][^>\n]{1,40}>|\b(your|company|"
                          r"applicant|hiring manager)(['’]s)? name\b|\bX{3,}\b", re.I)
_AI_DISCLAIMER = re.compile(r"\bas an (ai|artificial intelligence)( language)? (model|assistant)\b|"
                            r"\b(i am|i'm) (just )?an ai\b|\blanguage model\b|"
                            r"\bi (cannot|can't|am unable to) (write|create|provide|generate)\b", re.I)
_COMPANY_SUFFIX = re.compile(r"[\s,]+(inc|llc|ltd|limited|corp|corporation|co|company|gmbh|plc|group)\.?$", re.I)

_INLINE_BULLET = re.compile(r"\S[ \t]+[•▪●◦‣∙·*][ \t]+\S|\S[ \t]+[-–][ \t]+[A-Z]")
_INLINE_NUMBERS = re.compile(r"\b\d{1,2}[.)][ \t]+\S[^\n]*?[^\n\d][ \t]\d{1,2}[.)][ \t]+[A-Za-z]")
_STARTERS = (r"(Experience|Knowledge|Proficiency|Familiarity|Ability|Strong|Excellent|Demonstrated|Proven|"
             r"Minimum|Understanding|Expertise|Bachelor|Master|Degree|Good|Solid|Hands-on)")
_GLUED = re.compile(r"[a-z.,;:)]" + _STARTERS + r"\b")
_COMMA_ITEMS = re.compile(r",[ \t]+(Experience|Knowledge|Proficiency|Familiarity|Ability|Strong|Excellent|"
                          r"Demonstrated|Proven|Minimum|Understanding|Expertise)\b")


def word_count(text: str) -> int:
    return len(text.split())


def repetition(text: str) -> float:
    """Share of word trigrams that repeat an earlier trigram of the same text."""
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _repeated_sentence(text: str) -> str | None:
    seen = set()
    for s in re.split(r"(?<=[.!?])\s+", text):
        key = " ".join(re.findall(r"\w+", s.lower()))
        if len(key.split()) >= 5:
            if key in seen:
                return s.strip()
            seen.add(key)
    return None


def _mentions_company(letter: str, company: str) -> bool:
    core = _COMPANY_SUFFIX.sub("", company.strip()).strip(" .,")
    return bool(core) and core.lower() in letter.lower()


def _mentions_name(letter: str, name: str) -> bool:
    low = letter.lower()
    return any(len(part) > 1 and re.search(r"\b" + re.escape(part.lower()) + r"\b", low)
               for part in re.findall(r"[\w'-]+", name))


def generic_reasons(rec: dict, reuse: int = 1) -> list[str]:
    """Why a letter looks generic or machine-written (empty: it does not)."""
    letter = rec[TARGET_FIELD]
    reasons = []
    m = _PLACEHOLDER.search(letter)
    if m:
        reasons.append(f"placeholder {m.group(0)!r}")
    m = _AI_DISCLAIMER.search(letter)
    if m:
        reasons.append(f"AI disclaimer {m.group(0)!r}")
    rep = repetition(letter)
    if rep > REPETITION_MAX:
        reasons.append(f"{rep:.0%} of its word trigrams repeat")
    sent = _repeated_sentence(letter)
    if sent:
        reasons.append(f"repeats the sentence {sent[:60]!r}")
    company, name = rec["hiring_company"], rec["applicant_name"]
    if company.strip() and name.strip() and not _mentions_company(letter, company) and not _mentions_name(letter, name):
        reasons.append(f"names neither the company ({company.strip()!r}) nor the applicant ({name.strip()!r})")
    if reuse >= REUSE_MIN:
        reasons.append(f"the same letter is the target of {reuse} rows with different inputs")
    return reasons


def bullet_reason(text: str) -> str | None:
    """Why a Preferred Qualifications text looks like a collapsed bullet list (None: it does not)."""
    checks = ((_INLINE_BULLET, "inline bullet marks"), (_INLINE_NUMBERS, "several numbered items on one line"),
              (_GLUED, "items run together without a space"), (_COMMA_ITEMS, "capitalised items joined by commas"))
    for pattern, what in checks:
        m = pattern.search(text)
        if m:
            at = max(0, m.start() - 20)
            return f"{what}: ...{text[at:m.end() + 20].strip()!r}..."
    return None


def flag_record(rec: dict, min_words: int = 50, reuse: int = 1, grounding: dict | None = None) -> list[dict]:
    """The flags of one record: [{"flag": name, "reason": text}], in FLAG_NAMES order. ``grounding``: the
    letter's grounding findings when the caller has them (covertune.metrics.grounding.ground_details)."""
    letter = rec[TARGET_FIELD]
    flags = []

    def add(flag, reason):
        flags.append({"flag": flag, "reason": reason})

    words = word_count(letter)
    if words < min_words:
        add("too_short", f"{words} words; a letter needs at least {min_words}")
    if not _GREETING.search(letter):
        add("no_greeting", f"opens with {letter[:40]!r}, not a salutation such as 'Dear ...'")
    if not _SIGNOFF.search(letter):
        add("no_signoff", f"ends with {letter[-40:]!r}, not a valediction such as 'Sincerely,'")
    reasons = generic_reasons(rec, reuse)
    if reasons:
        add("generic", "; ".join(reasons))
    why = bullet_reason(rec["preferred_qualifications"])
    if why:
        add("collapsed_bullets", f"Preferred Qualifications has {why}")
    missing = rec.get(MISSING_FIELD) or [k for k in INPUT_FIELDS if not rec[k].strip()]
    if missing:
        add("empty_inputs", "empty: " + ", ".join(COLUMN_OF[k] for k in missing))
    why = ungrounded_reason(rec, grounding)
    if why:
        add("ungrounded", why)
    return flags


def ungrounded_reason(rec: dict, grounding: dict | None = None) -> str | None:
    """What the letter claims that its inputs do not support: numbers and organisations (None: nothing).
    ``grounding``: its findings already computed (ground_details), else they are computed here."""
    if grounding is None:
        inputs, letter = inputs_of(rec), rec[TARGET_FIELD]
        numbers = [n.text for n in number_claims(letter, inputs)[1]]
        orgs = unsupported_orgs(letter, inputs)
    else:
        numbers, orgs = grounding["unsupported_numbers"], grounding["unsupported_orgs"]
    parts = []
    if numbers:
        parts.append("numbers " + ", ".join(repr(x) for x in numbers))
    if orgs:
        parts.append("organisations " + ", ".join(repr(x) for x in orgs))
    return ("claims " + " and ".join(parts) + " that its inputs do not hold") if parts else None


def letter_reuse(records: Iterable[dict]) -> dict[str, int]:
    """Letter text -> number of distinct input sets it is the target of."""
    inputs = defaultdict(set)
    for rec in records:
        inputs[rec[TARGET_FIELD]].add(tuple(rec[k] for k in INPUT_FIELDS))
    return {letter: len(s) for letter, s in inputs.items()}


def flag_records(records: list[dict], min_words: int = 50) -> dict[str, int]:
    """Set ``flags`` on every record (letter reuse is counted across all of them); returns flag -> rows."""
    reuse = letter_reuse(records)
    counts = {name: 0 for name in FLAG_NAMES}
    for rec in records:
        rec[FLAGS_FIELD] = flag_record(rec, min_words, reuse.get(rec[TARGET_FIELD], 1))
        for f in rec[FLAGS_FIELD]:
            counts[f["flag"]] += 1
    return counts


def flag_names(rec: dict) -> list[str]:
    return [f["flag"] for f in rec.get(FLAGS_FIELD, [])]
