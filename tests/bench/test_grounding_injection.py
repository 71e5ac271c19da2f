"""bench/grounding_injection.py: the injector's own guarantees, and the detector's recall on a slice of
real letters."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import grounding_injection as gi  # noqa: E402

INPUTS = {"job_title": "Analyst", "hiring_company": "Brightwave", "preferred_qualifications": "5+ years",
          "applicant_name": "Ann Lee", "current_experience": "Analyst for 3 years",
          "past_experience": "Intern for eight months", "skillsets": "SQL", "qualifications": "BSc"}
LETTER = "Dear Hiring Manager,\n\nI am applying to Brightwave. I know SQL well. I am a fast learner.\n\nSincerely,\nAnn"


def test_injected_values_are_supported_by_nothing_in_the_inputs():
    taken = gi.input_values(INPUTS)
    assert {3.0, 5.0, 8.0, 11.0, 16.0} <= taken  # each number, and sums (3 + 8, 3 + 5 + 8)
    for row in range(40):
        tid, sentence = gi.number_sentence(row, INPUTS)
        assert tid and sentence
        for v in taken:
            if v:
                words = {gi.spelled(int(v))} if v == int(v) and v < 60 else set()
                assert f" {int(v) if v == int(v) else v} " not in f" {sentence} ", (v, sentence)
                assert not any(f" {w} " in f" {sentence} " for w in words), (v, sentence)


def test_injection_lands_at_a_sentence_boundary_and_is_deterministic():
    tid, sentence = gi.org_sentence(3, INPUTS, LETTER)
    out = gi.insert(LETTER, sentence, 3)
    assert out == gi.insert(LETTER, sentence, 3)
    assert out.replace(sentence + " ", "", 1) == LETTER
    at = out.index(sentence)
    assert at in gi.boundaries(LETTER)
    assert "Brightwave" not in sentence and "Acme" not in LETTER


def test_detector_recall_on_real_letters(dataset_dir):
    result = gi.measure(gi.load_rows(dataset_dir)[:64])
    assert result["letters"] == 64
    assert result["numbers"]["injected"] >= 60 and result["orgs"]["injected"] >= 60
    assert result["numbers"]["recall"] >= 0.95
    assert result["orgs"]["recall"] >= 0.85  # bare names with no cue ("Initech recognised ...") are missed
    assert result["numbers"]["controls_flagged"] == 0 and result["orgs"]["controls_flagged"] == 0
    assert result["untouched_flag_rate_either"] <= 0.1
