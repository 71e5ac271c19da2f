"""Quality flags on hand-made rows."""

from __future__ import annotations

from covertune.data.quality import FLAG_NAMES, bullet_reason, flag_record, flag_records, repetition
from covertune.core.records import INPUT_FIELDS

BODY = ("I am applying for the Data Analyst role at Northwind Retail. For two years at ClearCart I have built "
        "SQL pipelines and Power BI dashboards that the sales team uses every morning, and I ran the A/B tests "
        "behind our new checkout page, which raised conversion by four percent. Before that I was a junior "
        "analyst at Metro Insurance, where I learned to check every number twice. I hold a B.Sc. in Statistics.")
LETTER = f"Dear Hiring Manager,\n\n{BODY}\n\nSincerely,\nSamuel Osei"


def rec(letter=LETTER, **over):
    r = {k: f"{k} value" for k in INPUT_FIELDS}
    r.update(hiring_company="Northwind Retail", applicant_name="Samuel Osei",
             preferred_qualifications="SQL, Power BI, 2+ years of analytics experience",
             current_experience="Data Analyst at ClearCart for two years: SQL pipelines, Power BI dashboards, "
                                "A/B tests that raised checkout conversion by four percent",
             past_experience="Junior analyst at Metro Insurance", cover_letter=letter)
    r.update(over)
    r["missing_fields"] = [k for k in INPUT_FIELDS if not r[k].strip()]
    return r


def flags(r, **kw):
    return {f["flag"]: f["reason"] for f in flag_record(r, **kw)}


def test_a_good_letter_has_no_flag():
    assert flags(rec()) == {}


def test_ungrounded_names_what_the_inputs_do_not_hold():
    f = flags(rec(LETTER.replace("For two years", "For 8 years").replace("Metro Insurance", "Acme Corporation")))
    assert set(f) == {"ungrounded"}
    assert "'8'" in f["ungrounded"] and "Acme Corporation" in f["ungrounded"]
    # the same claims are grounded when the inputs hold them
    assert flags(rec(LETTER.replace("For two years", "For 8 years"),
                     current_experience="Data Analyst at ClearCart for 8 years, conversion up four percent")) == {}


def test_too_short():
    f = flags(rec("Dear Team,\n\nI want this job.\n\nSincerely,\nSam"))
    assert "too_short" in f and "words" in f["too_short"]
    assert "too_short" not in flags(rec("Dear Team,\n\nI want this job.\n\nSincerely,\nSam"), min_words=5)


def test_greeting_and_signoff():
    f = flags(rec(BODY))
    assert set(f) >= {"no_greeting", "no_signoff"}
    assert "no_greeting" not in flags(rec("To whom it may concern,\n\n" + BODY + "\n\nBest regards,\nSam Osei"))
    assert "no_signoff" not in flags(rec("Dear team, " + BODY + " Sincerely, Samuel Osei"))
    assert "no_signoff" not in flags(rec(LETTER.replace("Sincerely,", "Kind regards,")))
    # "Thank you for ..." as the last sentence is not a valediction
    assert "no_signoff" in flags(rec("Dear team,\n\n" + BODY + " Thank you for considering my application."))
    assert "no_signoff" in flags(rec("Dear team,\n\n" + BODY + " I will do my best."))


def test_generic_signals():
    assert "[Your Name]" in flags(rec(LETTER.replace("Samuel Osei", "[Your Name]")))["generic"]
    ai = flags(rec("As an AI language model, here is a letter.\n\n" + LETTER))
    assert "AI disclaimer" in ai["generic"]
    # "as an AI Engineer" is a job, not a disclaimer
    assert "generic" not in flags(rec(LETTER.replace("Data Analyst role", "role as an AI Engineer")))
    rep = "I am great at data. " * 12
    assert "repeat" in flags(rec(f"Dear A,\n\n{rep}\n\nSincerely,\nSamuel Osei"))["generic"]
    anon = LETTER.replace("Northwind Retail", "your company").replace("Samuel Osei", "Me")
    assert "names neither the company" in flags(rec(anon))["generic"]
    # the company named without its legal suffix counts as named
    assert "generic" not in flags(rec(hiring_company="Northwind Retail Inc."))


def test_letter_reused_for_different_inputs_is_generic():
    rows = [rec(skillsets=f"skill {i}") for i in range(3)] + [rec(applicant_name="Samuel Osei", skillsets="x")]
    rows.append(dict(rows[0]))  # an exact duplicate does not count twice
    counts = flag_records(rows)
    assert counts["generic"] == 5
    assert "target of 4 rows" in rows[0]["flags"][0]["reason"]
    fewer = [rec(skillsets="a"), rec(skillsets="b")]
    assert flag_records(fewer)["generic"] == 0


def test_collapsed_bullets():
    assert bullet_reason("• 2+ years of SQL • Experience with Tableau • Strong communication")
    assert bullet_reason("2+ years of SQL - Experience with Tableau - Strong communication")
    assert bullet_reason("1. 2+ years of SQL 2. Experience with Tableau 3. A degree")
    assert bullet_reason("Experience with SQLStrong communication skillsKnowledge of Tableau")
    assert bullet_reason("5+ Years Experience in Java, Knowledge of Spring Framework")
    # proper lists, prose and product names are fine
    assert bullet_reason("1. 2+ years of SQL\n2. Experience with Tableau\n3. A degree") is None
    assert bullet_reason("Experience with PyTorch, TensorFlow and HuggingFace; a Ph.D. is a plus") is None
    assert bullet_reason("5+ years of experience in Java Development") is None
    f = flags(rec(preferred_qualifications="• SQL • Tableau"))
    assert f["collapsed_bullets"].startswith("Preferred Qualifications has inline bullet marks")


def test_empty_inputs_names_the_columns():
    f = flags(rec(skillsets="", qualifications="  "))
    assert f["empty_inputs"] == "empty: Skillsets, Qualifications"


def test_flag_records_counts_every_flag():
    rows = [rec(), rec(BODY, skillsets="")]
    counts = flag_records(rows)
    assert list(counts) == list(FLAG_NAMES)
    assert counts["no_greeting"] == 1 and counts["empty_inputs"] == 1 and rows[0]["flags"] == []


def test_repetition_measure():
    assert repetition("one two three four five") == 0
    assert repetition("a b c a b c a b c") > 0.5
