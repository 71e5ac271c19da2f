"""classify.labels and classify.features: the labelling rule on constructed letters."""

from __future__ import annotations

from covertune.classify.features import CHECKS, examine
from covertune.classify.labels import label_letter, label_record

INPUTS = {"job_title": "Data Analyst", "hiring_company": "Brightwave Inc", "preferred_qualifications": "SQL",
          "applicant_name": "Ann Lee", "current_experience": "Data Analyst at Foxglove for 3 years",
          "past_experience": "Junior Analyst at Orbit Labs for 2 years", "skillsets": "SQL, Python, Tableau",
          "qualifications": "BSc in Statistics"}
BODY = ("I am writing to apply for the Data Analyst position at Brightwave. In my three years as a Data Analyst at "
        "Foxglove I built SQL pipelines and Tableau dashboards that the sales team uses every week, and before "
        "that I spent two years as a Junior Analyst at Orbit Labs cleaning and modelling data in Python. My BSc "
        "in Statistics gave me a firm grounding in experimental design and regression. I would welcome the chance "
        "to bring this experience to your analytics team.")
FULL = f"Dear Hiring Manager,\n\n{BODY}\n\nSincerely,\nAnn Lee"


def test_a_grounded_letter_is_positive_with_or_without_greeting_and_signoff():
    assert label_letter(FULL, INPUTS) == (1, [])
    # a body-only letter: no greeting, no sign-off, no applicant name; still a good letter
    assert label_letter(BODY, INPUTS) == (1, [])


def test_each_negative_reason():
    cases = {
        "too_short": "Dear Hiring Manager, I want the Data Analyst job at Brightwave. Sincerely, Ann Lee",
        "generic": FULL.replace("Ann Lee", "[Your Name]"),
        "unsupported number": BODY.replace("In my three years", "In my 11 years"),
        "unsupported organisation": BODY + " I also interned at Initech Corporation.",
        "company missing": BODY.replace("at Brightwave", "at your company"),
    }
    for reason, letter in cases.items():
        label, reasons = label_letter(letter, INPUTS)
        assert label == 0, reason
        assert any(r.startswith(reason) for r in reasons), (reason, reasons)
    # the unsupported number is named
    assert "unsupported number: 11" in label_letter(cases["unsupported number"], INPUTS)[1]


def test_a_record_is_labelled_from_its_stored_flags():
    rec = {**INPUTS, "cover_letter": FULL, "flags": []}
    assert label_record(rec) == (1, [])
    # the data stage found this letter serving several input sets: its stored generic flag decides
    rec["flags"] = [{"flag": "generic", "reason": "the same letter is the target of 4 rows with different inputs"}]
    label, reasons = label_record(rec)
    assert label == 0 and reasons == ["generic: the same letter is the target of 4 rows with different inputs"]
    # flags that are no reason (a missing greeting) leave it positive
    rec["flags"] = [{"flag": "no_greeting", "reason": "opens with 'I am'"}]
    assert label_record(rec) == (1, [])


def test_examine_gives_the_checks_and_the_same_label():
    good = examine(FULL, INPUTS)
    assert len(good.checks) == len(CHECKS) and good.label == 1 and good.reasons == []
    values = dict(zip(CHECKS, good.checks))
    assert values["company_mentioned"] == 1.0 and values["unsupported_numbers"] == 0.0
    assert values["no_greeting"] == 0.0 and values["skills_coverage"] == 1.0
    bad = dict(zip(CHECKS, examine(BODY.replace("three years", "11 years"), INPUTS).checks))
    assert bad["unsupported_numbers"] == 1.0 and bad["no_greeting"] == 1.0
    # an empty input field is nothing to miss
    assert dict(zip(CHECKS, examine(BODY, {**INPUTS, "skillsets": ""}).checks))["skills_coverage"] == 1.0
