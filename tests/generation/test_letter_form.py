"""covertune.generation.letter_form: a letter's form detected, completed to a full letter from the inputs only, cut to
its body; full-form candidates preferred by the choice."""

from __future__ import annotations

import pytest

from covertune.generation.letter_form import FORMS, apply_form, body_of, complete, detect, is_full, parts
from covertune.generation.select import choose

FIELDS = {"applicant_name": "Jane Doe", "hiring_company": "Acme Corp", "job_title": "Data Analyst"}
BODY = "I am writing to apply for the Data Analyst position at Acme Corp. I know SQL and Python."
FULL = f"Dear Hiring Manager,\n\n{BODY}\n\nSincerely,\nJane Doe"


def test_detect():
    assert detect(FULL, "Jane Doe").full
    shape = detect(BODY, "Jane Doe")
    assert not shape.greeting and not shape.sign_off and not shape.full
    no_name = detect(f"Dear Hiring Manager,\n\n{BODY}\n\nBest regards,\nJohn Smith", "Jane Doe")
    assert no_name.greeting and no_name.sign_off and not no_name.name_sign_off and not no_name.full
    assert detect(f"{BODY}\n\nSincerely,\nJane Doe", "Jane Doe") == detect(f"{BODY}\n\nSincerely,\nJane Doe", "")
    assert not detect(f"Dear Hiring Manager,\n\n{BODY}\n\nSincerely,", "Jane Doe").sign_off  # no name after it
    assert detect(f"Dear Hiring Manager,\n\n{BODY}\n\nKind regards,\nJane", "").full  # no name known: any line


def test_complete_adds_only_what_the_inputs_hold():
    assert complete(FULL, FIELDS) == FULL
    assert complete(BODY, FIELDS) == f"Dear Acme Corp team,\n\n{BODY}\n\nSincerely,\nJane Doe"
    assert complete(BODY, {"applicant_name": "None"}) == f"Dear Hiring Manager,\n\n{BODY}\n\nSincerely,"
    # a greeting of its own is kept; a sign-off naming someone else is replaced by the applicant's
    other = f"Dear Ms. Lee,\n\n{BODY}\n\nBest regards,\nJohn Smith"
    assert complete(other, FIELDS) == f"Dear Ms. Lee,\n\n{BODY}\n\nSincerely,\nJane Doe"
    kept = f"{BODY}\n\nWarm regards,\nJane Doe"
    assert complete(kept, FIELDS) == f"Dear Acme Corp team,\n\n{BODY}\n\nWarm regards,\nJane Doe"
    for letter in (BODY, other, kept):
        assert is_full(complete(letter, FIELDS), FIELDS)


def test_body_and_apply_form():
    assert body_of(FULL) == BODY
    assert body_of(BODY) == BODY
    assert body_of(f"{BODY}\n\nThank you,\nJane Doe") == BODY
    assert apply_form(BODY, "auto", FIELDS) == BODY
    assert apply_form(BODY, "full", FIELDS).startswith("Dear Acme Corp team,")
    assert apply_form(FULL, "body", FIELDS) == BODY
    assert apply_form("", "full", FIELDS) == ""
    assert FORMS == ("auto", "full", "body")
    with pytest.raises(ValueError, match="form must be one of auto, full, body"):
        apply_form(BODY, "letter", FIELDS)


def test_full_completes_the_usual_choice():
    """The form plays no part in the choice (preferring full-form candidates gained nothing on validation):
    full is the grounded MBR choice, completed."""
    fields = {**FIELDS, "skillsets": "SQL, Python"}
    grounded_body = f"I am Jane Doe. {BODY}"
    invented_full = f"Dear Hiring Manager,\n\nAt Acme Corp I grew revenue 250%. {BODY}\n\nSincerely,\nJane Doe"
    cands = [grounded_body, grounded_body + " I like data.", FULL, invented_full]
    chosen = choose(cands, "grounded-mbr", fields)
    assert chosen.index in (0, 1)  # the grounded body letters agree most with the others
    full = apply_form(chosen.letter, "full", fields)
    assert full.startswith("Dear Acme Corp team,") and full.endswith("Sincerely,\nJane Doe")
    assert body_of(full) == body_of(chosen.letter)
    # recorded MBR scores give the choice they were computed for; other scores another
    computed = choose(cands, "mbr", fields)
    assert choose(cands, "mbr", fields, scores=computed.scores).index == computed.index
    assert choose(cands, "mbr", fields, scores=[0.0, 0.0, 0.0, 1.0]).index == 3


def test_greeting_and_closing_run_into_the_body():
    """A one-paragraph letter that opens with "Dear ..., I am" and ends "... Sincerely, Jane Doe" is a full letter:
    ``full`` sets its greeting and sign-off on lines of their own and adds no second ones."""
    one = f"Dear Hiring Manager, {BODY} Thank you for your time. Sincerely, Jane Doe"
    cut = parts(one)
    assert (cut.greeting, cut.closing, cut.inline) == ("Dear Hiring Manager,", "Sincerely,\nJane Doe", True)
    assert cut.body == f"{BODY} Thank you for your time."
    assert detect(one, "Jane Doe").full
    done = f"Dear Hiring Manager,\n\n{BODY} Thank you for your time.\n\nSincerely,\nJane Doe"
    assert complete(one, FIELDS) == done and apply_form(one, "full", FIELDS) == done
    assert complete(done, FIELDS) == done  # already in shape: unchanged
    assert body_of(one) == f"{BODY} Thank you for your time."
    # the name on the next line; a closing naming someone else is replaced; a sentence that thanks is body
    assert complete(f"{BODY} Best regards,\nJane Doe", FIELDS) == (
        f"Dear Acme Corp team,\n\n{BODY}\n\nBest regards,\nJane Doe")
    assert complete(f"Dear Ms. Lee: {BODY} Sincerely, John Smith", FIELDS) == (
        f"Dear Ms. Lee:\n\n{BODY}\n\nSincerely,\nJane Doe")
    thanks = f"{BODY} Thank you for considering my application."
    assert parts(thanks) == parts(thanks) and parts(thanks).closing == "" and not parts(thanks).inline
    assert complete(thanks, FIELDS) == f"Dear Acme Corp team,\n\n{thanks}\n\nSincerely,\nJane Doe"
    # a sentence that merely starts like a greeting or ends on capitalised words is not cut
    for text in (f"Hello world is the first program I wrote. {BODY}", f"{BODY} I thank you, Acme Corp.",
                 f"{BODY} Regards to the team at Acme Corp"):
        assert not parts(text).inline, text
    for letter in (one, thanks):
        shaped = complete(letter, FIELDS)
        assert shaped.lower().count("dear ") == 1 and shaped.count("Sincerely,") == 1, shaped
