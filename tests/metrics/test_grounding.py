"""Grounding rules on hand-made cases."""

from __future__ import annotations

import math

from covertune.metrics import grounding as g
from covertune.core.records import INPUT_FIELDS


def inputs(**kw) -> dict:
    return {k: kw.get(k, "") for k in INPUT_FIELDS}


# ---------------------------------------------------------------- mentions


def test_name_mentioned():
    assert g.name_mentioned("Sincerely,\nJohn Smith", "John Smith") == 1.0
    assert g.name_mentioned("regards, JOHN   SMITH", "John Smith") == 1.0
    assert g.name_mentioned("I, John, ... Best, Smith", "John A. Smith") == 1.0  # first + last
    assert g.name_mentioned("Sincerely, John", "John Smith") == 0.0
    assert g.name_mentioned("Sincerely, Johnny Smithers", "John Smith") == 0.0  # whole words only
    assert math.isnan(g.name_mentioned("anything", ""))


def test_company_mentioned():
    assert g.company_mentioned("I admire XYZ Corporation's mission", "XYZ Corporation") == 1.0
    assert g.company_mentioned("the role at XYZ Corp.", "XYZ Corporation") == 1.0  # legal suffix optional
    assert g.company_mentioned("the role at xyz", "XYZ Inc.") == 1.0
    assert g.company_mentioned("the role at ABC Company", "XYZ Company") == 0.0
    assert g.company_mentioned("the role at your company", "Tech Solutions") == 0.0
    assert math.isnan(g.company_mentioned("x", ""))


def test_job_title_mentioned():
    assert g.job_title_mentioned("the Senior Data Scientist role", " Senior Data Scientist") == 1.0
    assert g.job_title_mentioned("the sr. data scientist role", "Senior Data Scientist") == 1.0
    assert g.job_title_mentioned("the Data Scientist role", "Data Scientist (NLP)") == 1.0
    assert g.job_title_mentioned("the Research & Development Engineer job", "Research and Development Engineer") == 1.0
    assert g.job_title_mentioned("the Data Science team", "Data Scientist") == 0.0
    assert g.job_title_mentioned("the Data Scientist role", "Senior Data Scientist") == 0.0


# ---------------------------------------------------------------- skills


def test_split_skills():
    labels = [s.label for s in g.split_skills("Python, R, SQL, and machine learning; Communication skills")]
    assert labels == ["Python", "R", "SQL", "machine learning", "Communication skills"]
    skills = g.split_skills("Programming languages (Python, Java), Cloud computing and Docker")
    assert [s.label for s in skills] == ["Programming languages", "Cloud computing", "Docker"]
    assert skills[0].alternatives == ("Programming languages", "Python", "Java")
    labels = [s.label for s in g.split_skills("Hard Skills: Python, Java\nSoft Skills: teamwork, problem-solving")]
    assert labels == ["Python", "Java", "teamwork", "problem-solving"]
    labels = [s.label for s in g.split_skills("Proficient in SQL; Strong knowledge of NLP; Excellent communication")]
    assert labels == ["SQL", "NLP", "communication"]
    assert g.split_skills("") == []
    assert [s.label for s in g.split_skills("Python, python")] == ["Python"]


def test_skill_coverage():
    letter = ("I write Python and Java daily, and I am a strong problem-solving engineer with excellent "
              "communication. R&D interests me.")
    total, mentioned, missing = g.skill_coverage(
        letter, "Programming (Python, Java), problemsolving, Communication skills, R, C++, Kubernetes")
    assert (total, mentioned) == (6, 4)
    assert missing == ["C++", "Kubernetes"]
    assert g.skill_coverage("I know C++ and C#.", "C++, C#, C")[:2] == (3, 2)
    assert g.skill_coverage("Regression models", "R")[1] == 0  # "R" never matches inside a word


# ---------------------------------------------------------------- numbers


def test_sum_of_resume_numbers_supports_a_claim():
    resume = inputs(past_experience="Analyst at ABC for 3 years", current_experience="Scientist at DEF for 4 years")
    claimed, unsupported = g.number_claims("With 7 years of experience and 3 years at ABC", resume)
    assert [n.value for n in claimed] == [7, 3]
    assert unsupported == []
    claimed, unsupported = g.number_claims("With over 5 years of experience", resume)
    assert [n.text for n in unsupported] == ["5"]


def test_numbers_in_the_inputs_are_supported():
    inp = inputs(qualifications="5+ years of experience, improved retention by 20%",
                 preferred_qualifications="4+ years of Python, 2+ years of SQL")
    assert g.number_claims("I have 5+ years of experience and raised retention 20 %", inp)[1] == []
    assert g.number_claims("I bring 4 years of Python", inp)[1] == []
    # job-description requirements are not added up: 4 + 2 does not support 6
    assert [n.text for n in g.number_claims("I have 6 years of experience", inp)[1]] == ["6"]
    # percentages and money are claims too
    assert [n.text for n in g.number_claims("cut costs by 30% and saved $1,000", inp)[1]] == ["30%", "$1,000"]


def test_what_is_not_a_number_claim():
    letter = ("June 5, 2023\n\n1. Experience with J2EE, 5G, word2vec and Lumen5.\n(2) Call (555) 123-4567.\n"
              "Support 24/7 since 05/06/2021. Question 3: why? [123 Your Street] May 2020")
    assert g.extract_numbers(letter) == []


def test_spelled_numbers_and_years():
    nums = g.extract_numbers("I have five years of experience, one of the best, ten projects, two-thirds")
    assert [(n.text, n.value) for n in nums] == [("five", 5.0), ("ten", 10.0)]
    assert g.extract_numbers("twenty-five years")[0].value == 25
    inp = inputs(past_experience="Developer at ABC since 2015 (3 years)", current_experience="Lead (2 years)")
    claimed, unsupported = g.number_claims("Since 2015 I have 5 years; in 2018 I led a team", inp)
    assert [n.text for n in unsupported] == ["2018"]
    assert claimed[0].kind == "year"


def test_subset_sum():
    assert g._is_subset_sum(7, [3, 4])
    assert g._is_subset_sum(9, [2, 3, 4])
    assert not g._is_subset_sum(5, [3, 4])
    assert g._is_subset_sum(4.5, [1.5, 3])
    assert not g._is_subset_sum(6, [3])  # each input number is used once


# ---------------------------------------------------------------- organisations


def test_find_orgs():
    letter = ("At XYZ Corporation I led projects. Before that I worked at Google, Amazon and Meta. "
              "I studied at Stanford University and hold a degree from University of Texas at Austin. "
              "My experience with Python and [Company Name] templates helps. Data Science is my field. "
              "I am certified at SE Level 1. Thank you,\nJohn Smith")
    orgs = g.find_orgs(letter)
    assert orgs == ["XYZ Corporation", "Google", "Amazon", "Meta", "Stanford University", "University of Texas",
                    "Austin"]


def test_unsupported_orgs():
    inp = inputs(hiring_company="XYZ Corporation", current_experience="Data Scientist at DEF Company",
                 past_experience="Analyst at Google", qualifications="BSc from MIT")
    letter = ("I am excited to join XYZ Corp's team. At DEF Company and at Google I built models; "
              "I studied at MIT. I also interned at Initech Labs and at ABC Company.")
    assert g.unsupported_orgs(letter, inp) == ["Initech Labs", "ABC Company"]
    assert g.unsupported_orgs("I want to work at XYZ.", inp) == []


def test_ground_columns():
    inp = inputs(applicant_name="Ann Lee", hiring_company="XYZ Corp", job_title="Data Scientist",
                 skillsets="Python, SQL", past_experience="3 years at ABC Inc", current_experience="4 years")
    row = g.ground("Dear XYZ Corp, as a Data Scientist with 7 years (and over 9 years) in Python at Initech "
                   "Labs, I apply. Ann Lee", inp)
    assert list(row) == list(g.GROUNDING_COLUMNS)
    assert (row["name_mentioned"], row["company_mentioned"], row["job_title_mentioned"]) == (1.0, 1.0, 1.0)
    assert (row["skills_total"], row["skills_mentioned"], row["skills_coverage"]) == (2, 1, 0.5)
    assert row["skills_missing_list"] == "SQL"
    assert row["numbers_claimed_list"] == "7; 9"
    assert (row["unsupported_numbers"], row["unsupported_numbers_list"]) == (1, "9")
    assert (row["unsupported_orgs"], row["unsupported_orgs_list"]) == (1, "Initech Labs")
    unknown = g.ground("a letter", None)
    assert math.isnan(unknown["name_mentioned"]) and unknown["unsupported_orgs_list"] == ""


# ---------------------------------------------------------------- recall and false positives, hand-made

_INPUTS = inputs(job_title="Data Analyst", hiring_company="Brightwave Inc.", applicant_name="Ann Lee",
                 current_experience="Data Analyst at Foxglove Retail for 3 years",
                 past_experience="Junior Analyst at Harbor Health for 2 years",
                 skillsets="SQL, Python, Tableau", qualifications="BSc Statistics, University of Leeds",
                 preferred_qualifications="3+ years of experience with SQL; a team of 5 analysts")
_OPENING = "Dear Hiring Manager, I am applying for the Data Analyst role at Brightwave. "
# one invented fact each, phrased unlike bench/grounding_injection.py's templates
_INVENTED = [
    ("I bring nine years of analytics experience.", "nine"),
    ("I have spent twelve years in retail analytics.", "twelve"),
    ("After 6 years in the field, I know the work.", "6"),
    ("I have 4+ years of Python experience.", "4+"),
    ("With over a decade in data, I can lead.", "a decade"),
    ("I built fourteen Tableau dashboards for executives.", None),  # "dashboards" is no unit: a known miss
    ("I supervised eight other analysts.", "eight"),
    ("My reports reached 40k readers.", "40k"),
    ("I grew revenue by 35%.", "35%"),
    ("My models cut churn by fifteen percent.", "fifteen"),
    ("I saved the company $2M a year.", "$2M"),
    ("I wrote twenty-one internal reports.", "twenty-one"),
    ("I have two decades of SQL practice.", "two decades"),  # (half a decade = 3 + 2 years: supported)
    ("I made queries 10x faster.", "10x"),
    ("I coached eleven new analysts.", "eleven"),
    ("Before Foxglove, I worked for Larkspur Capital.", "Larkspur Capital"),
    ("I interned at Quillon last summer.", "Quillon"),
    ("I did an internship with Mereth Analytics.", "Mereth Analytics"),
    ("I was recruited by Tandem Partners.", "Tandem Partners"),
    ("I spent two summers as a consultant for Okapi.", "Okapi"),
    ("I partnered with Velora Group on a pricing study.", "Velora Group"),
    ("I studied at Westbrook College before this.", "Westbrook College"),
    ("Zentrix praised my dashboards.", None),  # a bare name with no cue: a known miss
    ("I volunteered for Riverside Foundation as a tutor.", "Riverside Foundation"),
]
_SUPPORTED = [  # facts the inputs give, or no claim at all
    "I have 3 years of experience at Foxglove Retail.",
    "In total I have five years of experience as an analyst.",  # 3 + 2
    "I have over 3 years of SQL experience, as you ask.",
    "I would enjoy leading a team of 5 analysts.",
    "I worked at Harbor Health as a junior analyst.",
    "I studied statistics at the University of Leeds.",
    "I am excited to join Brightwave.",
    "I know SQL, Python and Tableau well.",
    "One of my strengths is explaining numbers to people.",
    "I have worked on 64-bit systems and 24/7 support rotas.",
    "I graduated in May 2019 and started on June 5, 2020.",
    "I bring three key strengths: rigour, clarity and speed.",
    "I am confident two of my projects match your needs.",
    "I have worked with Python and SQL every day.",
    "Working at Brightwave Inc. would be a privilege.",
    "I spent my years with Tableau building clear reports.",
]


def _flags(sentence: str) -> list[str]:
    d = g.ground_details(_OPENING + sentence + " Sincerely, Ann Lee", _INPUTS)
    return d["unsupported_numbers"] + d["unsupported_orgs"]


def test_recall_on_hand_made_invented_facts():
    caught = 0
    for sentence, fact in _INVENTED:
        flags = _flags(sentence)
        if fact is not None:
            assert fact in flags, (sentence, flags)
        caught += bool(flags)
    assert caught / len(_INVENTED) >= 0.9  # 22 of 24 when written (12 before word units, idioms, cues)


def test_false_positives_on_hand_made_supported_letters():
    flagged = [(s, _flags(s)) for s in _SUPPORTED]
    bad = [f for f in flagged if f[1]]
    assert len(bad) / len(_SUPPORTED) <= 1 / 16, bad  # 0 of 16 when written
