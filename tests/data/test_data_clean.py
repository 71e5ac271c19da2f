"""Each letter-cleaning rule on hand-made strings, and the counters."""

from __future__ import annotations

import pytest

from covertune.data.clean import RULE_NAMES, clean_letter, clean_records, reference_clean

LETTER = "Dear Ms. Lee,\n\nI would like to apply.\n\nSincerely,\nAna"


@pytest.mark.parametrize("raw,clean,rule", [
    # split at "\n### Sample": the first part that has "Dear" or is longer than 100 characters
    (LETTER + "\n### Sample 2\nDear Sir,\nAnother letter.", LETTER, "split_samples"),
    ("Too short.\n### Sample 2\n" + LETTER, LETTER, "split_samples"),
    ("x" * 101 + "\n### Sample 2\n" + LETTER, "x" * 101, "split_samples"),
    # lines starting with two or more '#' go; one '#' stays
    ("Dear A,\n## Note: tailor this\nBody.\n  ### Heading\n# one hash stays", "Dear A,\nBody.\n# one hash stays",
     "drop_hash_lines"),
    ("Dear A,\n\n\n\nBody.\n \n\t\n\nEnd.", "Dear A,\n\nBody.\n\nEnd.", "collapse_blank_lines"),
    ("\n  Dear A,\n\nBody.  \n\n", "Dear A,\n\nBody.", "strip"),
    ("Dear A,\r\n\r\nBody.\rEnd.", "Dear A,\n\nBody.\nEnd.", "line_endings"),
    ("Dear A,\u00a0I\u2009am\u200b here.", "Dear A, I am here.", "unicode_spaces"),
    ("\u201cHello\u201d, I\u2019m \u2018ready\u2019.", "\"Hello\", I'm 'ready'.", "curly_quotes"),
    ("Dear  A,\n\t Body   text.\t\nEnd.", "Dear A,\nBody text.\nEnd.", "repeated_spaces"),
    ("Skills , and more . Really ! Why ? Yes ; no : maybe.", "Skills, and more. Really! Why? Yes; no: maybe.",
     "space_before_punctuation"),
])
def test_each_rule(raw, clean, rule):
    out, fired = clean_letter(raw)
    assert out == clean
    assert rule in fired


def test_punctuation_rule_leaves_words_alone():
    text = "I use .NET and C# daily ... and version .5 works (see below) ."
    out, fired = clean_letter(text)
    assert ".NET" in out and " ... " in out and " .5 " in out
    assert out.endswith("below).")


def test_clean_letter_changes_nothing_in_a_clean_letter():
    assert clean_letter(LETTER) == (LETTER, [])


def test_reference_rules_alone():
    raw = "  Dear A,\n## x\n\n\n\nBody \u201cquoted\u201d.\n### Sample 2\nDear B"
    assert reference_clean(raw) == "Dear A,\n\nBody \u201cquoted\u201d."


def test_clean_records_counts_letters_per_rule_and_keeps_inputs():
    recs = [{"cover_letter": "  Dear A,  B .", "job_title": "  Data Scientist"},
            {"cover_letter": "Dear A,\u2019", "job_title": " x"},
            {"cover_letter": LETTER, "job_title": "x "}]
    counts = clean_records(recs)
    assert set(counts) == set(RULE_NAMES)
    assert counts["strip"] == 1 and counts["repeated_spaces"] == 1 and counts["curly_quotes"] == 1
    assert counts["space_before_punctuation"] == 1 and counts["split_samples"] == 0
    assert recs[0]["cover_letter"] == "Dear A, B." and recs[0]["cover_letter_raw"] == "  Dear A,  B ."
    assert [r["job_title"] for r in recs] == ["  Data Scientist", " x", "x "]


def test_cleaned_test_letters_equal_the_reference_ground_truth(dataset_dir, reference_dir):
    import pandas as pd

    test = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False)
    ref = pd.read_csv(reference_dir / "eval.csv", dtype=str, keep_default_na=False)
    raw = test["Cover Letter"].tolist()
    assert [reference_clean(t) for t in raw] == ref["ground_truth"].tolist()
    assert [clean_letter(t)[0] for t in raw] == ref["ground_truth"].tolist()
