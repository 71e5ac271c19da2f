"""select: the MBR and grounded choices on hand-made candidates, and candidates from one batched call on
a tiny random model."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.core import records
from covertune.generation.decoding import Decoding
from covertune.generation.letters import generate_letters
from covertune.core.prompt import prompt_ids
from covertune.metrics.rouge import rouge_l
from covertune.models.load import load_model, load_tokenizer
from covertune.generation.select import (
    choose,
    generate_candidate_ids,
    generate_chosen_letters,
    grounding_failures,
    mbr_scores,
    summarise,
)

from conftest import CountGenerate

INPUTS = {"job_title": "Data Analyst", "hiring_company": "Brightwave", "preferred_qualifications": "",
          "applicant_name": "Ann Lee", "current_experience": "Data Analyst at Foxglove for 3 years",
          "past_experience": "", "skillsets": "SQL, Python", "qualifications": ""}
BODY = "I am applying for the Data Analyst role at Brightwave. I use SQL and Python every day at Foxglove"
CANDIDATES = [
    BODY + ". Sincerely, Ann Lee",  # 0: greedy
    BODY + " and I enjoy it. Sincerely, Ann Lee",  # 1: the consensus: closest to all the others
    BODY + " with 3 years of analysis and I enjoy it. Sincerely, Ann Lee",  # 2
    BODY + " with 9 years of analysis and I enjoy it. Sincerely, Ann Lee",  # 3: an invented number
    "Hello. I like cats and long walks on the beach.",  # 4: an outlier
]


def test_mbr_scores_are_mean_rouge_against_the_others():
    scores = mbr_scores(CANDIDATES)
    expected = [sum(rouge_l(c, o) for o in CANDIDATES if o is not c) / 4 for c in CANDIDATES]
    assert scores == pytest.approx(expected)
    assert max(range(5), key=scores.__getitem__) in (1, 2, 3) and scores[4] == min(scores)
    assert mbr_scores(["only one"]) == [1.0]


def test_mbr_scores_reproduce_the_shipped_models_recorded_choices():
    """The candidates the shipped model wrote for 8 validation rows (committed with their MBR scores, computed
    then with rouge-score's own LCS): the same scores to the recorded 6 digits, and the same choice."""
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).parents[2] / "docs/results/shipped_smol_llamacpp/candidates_validation.fine_tuned.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(next(f)) for _ in range(8)]
    checked = 0
    for row in rows:
        letters = [c["letter"] for c in row["candidates"]]
        scores = mbr_scores(letters)
        assert [round(x, 6) for x in scores] == [c["mbr"] for c in row["candidates"]]
        passing = [k for k, c in enumerate(row["candidates"]) if not c["failures"]]
        if passing:  # grounded MBR: the best score among the candidates that pass (ties: the earlier)
            assert row["chosen"] == max(passing, key=lambda k: (scores[k], -k))
            checked += 1
    assert checked >= 5


def test_mbr_picks_the_consensus_and_greedy_picks_the_first():
    scores = mbr_scores(CANDIDATES)
    best = max(range(5), key=scores.__getitem__)
    assert choose(CANDIDATES, "mbr").index == best
    assert choose(CANDIDATES, "greedy", INPUTS).index == 0
    # ties go to the earlier candidate
    assert choose(["a b c", "a b c", "x y z"], "mbr").index == 0


def test_grounded_mbr_drops_an_invented_number():
    # make the candidate with the invented number the MBR winner: the others echo it
    cands = [CANDIDATES[0], CANDIDATES[3], CANDIDATES[3].replace("enjoy", "love"), CANDIDATES[2]]
    assert choose(cands, "mbr").index in (1, 2)
    choice = choose(cands, "grounded-mbr", INPUTS)
    assert choice.reasons[1] == ["unsupported number: 9"] and choice.reasons[2] == ["unsupported number: 9"]
    assert choice.reasons[0] == [] and choice.reasons[3] == []
    assert choice.index == max((0, 3), key=lambda k: choice.scores[k])
    record = choice.record([5, 6, 7, 8])
    assert record["chosen"] == choice.index and not record["all_failed"]
    assert record["candidates"][1]["failures"] == ["unsupported number: 9"]
    assert [c["new_tokens"] for c in record["candidates"]] == [5, 6, 7, 8]


def test_skills_weight_prefers_the_letter_naming_more_of_the_skills():
    """Two grounded letters close in MBR score: the weight on skills coverage takes the one naming SQL and
    Python over the one naming neither; a failing candidate stays out however many skills it names, and
    when every candidate fails the choice is the least bad one as without the weight."""
    inputs = {**INPUTS, "skillsets": "SQL, Python, Tableau"}
    base = "I am applying for the Data Analyst role at Brightwave. Sincerely, Ann Lee"
    cands = [base, base.replace("role", "role, with SQL and Python,"), base.replace("role", "role gladly"),
             base.replace("role", "role (9 years of SQL, Python and Tableau)")]
    plain = choose(cands, "grounded-mbr", inputs)
    weighted = choose(cands, "grounded-mbr", inputs, skills_weight=0.2)
    assert plain.index != 1 and weighted.index == 1 and weighted.scores == plain.scores
    assert weighted.reasons[3] == ["unsupported number: 9"]
    assert choose(cands, "grounded-mbr", inputs, skills_weight=5.0).index == 1  # never the ungrounded one
    failing = [c.replace("Ann Lee", "A. L.") for c in cands]
    assert all(choose(failing, "grounded-mbr", inputs).reasons)
    assert (choose(failing, "grounded-mbr", inputs, skills_weight=5.0).index
            == choose(failing, "grounded-mbr", inputs).index)
    with pytest.raises(ValueError, match="select_skills_weight"):
        from covertune.config.build import build

        build("write", {"select_skills_weight": -1})


def test_grounded_mbr_when_all_fail_takes_the_least_bad():
    cands = ["I have 9 years at Acme Corporation. Ann Lee, for Brightwave.",
             "I have 9 years in analysis. Ann Lee, for Brightwave.",
             "I have 9 years in analysis, for Brightwave."]
    choice = choose(cands, "grounded-mbr", INPUTS)
    assert all(choice.reasons)
    assert choice.index == 1 and choice.reasons[1] == ["unsupported number: 9"]
    assert choice.record()["all_failed"]
    assert "applicant name missing" in choice.reasons[2]
    assert "unsupported organisation: Acme Corporation" in choice.reasons[0]


def test_repetition_weight_prefers_the_less_repetitive_of_close_candidates():
    plain = "I am applying for the analyst role at Brightwave with SQL and Python skills. Sincerely, Ann Lee"
    echo = ("I am applying for the analyst role at Brightwave with SQL and Python and SQL and Python skills. "
            "Sincerely, Ann Lee")
    cands = [plain.replace("skills", "experience"), echo, echo.replace("role", "post"), plain]
    scores = mbr_scores(cands)
    assert choose(cands, "grounded-mbr", INPUTS).index in (1, 2)  # the repetitive pair agree most
    from covertune.metrics.repetition import repetition_ratio

    choice = choose(cands, "grounded-mbr", INPUTS, repetition_weight=2.0)
    assert choice.index in (0, 3) and choice.scores == scores  # the record keeps the plain MBR scores
    expected = max(range(4), key=lambda k: (scores[k] - 2.0 * repetition_ratio(cands[k]), -k))
    assert choice.index == expected
    # a weight cannot bring back a candidate that fails the grounding check
    invented = [cands[0], cands[3].replace("Python", "Python for 9 years")]
    assert choose(invented, "grounded-mbr", INPUTS, repetition_weight=100.0).index == 0


def test_failures_and_bad_modes():
    assert grounding_failures("", INPUTS) == ["empty letter"]
    assert grounding_failures("Dear team at Brightwave, hire me. Ann Lee", INPUTS) == []
    assert grounding_failures("Dear team, hire me.", INPUTS) == ["applicant name missing", "hiring company missing"]
    assert grounding_failures("I have 9 years.", None) == []  # unknown inputs: nothing to check
    with pytest.raises(ValueError, match="select must be one of greedy, mbr, grounded-mbr"):
        choose(["a"], "best")
    with pytest.raises(ValueError, match="no candidates"):
        choose([], "mbr")


# ---------------------------------------------------------------- on a tiny random model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = load_tokenizer(str(tiny_model_dir), padding_side="left")
    model = load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok).eval()
    return model, tok


@pytest.fixture(scope="module")
def prompts(dataset_dir, tiny):
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(3)
    recs = [records.from_source_row(r) for r in frame.to_dict("records")]
    return [prompt_ids(r, tiny[1], "raw") for r in recs], [records.inputs_of(r) for r in recs]


def test_n_candidates_cost_one_generate_call_and_the_first_is_greedy(tiny, prompts, monkeypatch):
    model, tok = tiny
    texts, _ = prompts
    greedy = generate_letters(model, tok, texts, 3, Decoding(max_new_tokens=12), progress=False)
    counter = CountGenerate(monkeypatch)
    decoding = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_p=1.0, top_k=0, seed=3)
    got = list(generate_candidate_ids(model, tok, texts, 4, decoding, batch_size=3))
    assert counter.calls == 1
    (batch, groups), = got
    assert sorted(batch) == [0, 1, 2] and all(len(g) == 4 for g in groups)
    from covertune.core.prompt import extract_letter

    for i, group in zip(batch, groups):
        decoded = [extract_letter(tok.decode(ids, skip_special_tokens=True)) for ids in group]
        assert decoded[0] == greedy[i]  # the held row is the greedy letter
        assert len(set(decoded[1:])) > 1 and any(d != greedy[i] for d in decoded[1:])  # the rest are samples


def test_chosen_letters_record_the_choice_and_resume(tiny, prompts, tmp_path, monkeypatch):
    from covertune.generation.letters import Journal

    model, tok = tiny
    texts, fields = prompts
    decoding = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0, seed=3)
    with Journal(tmp_path / "j.jsonl", {"k": 1}) as journal:
        letters, choices = generate_chosen_letters(model, tok, texts, fields, 3, "grounded-mbr", decoding,
                                                   batch_size=2, journal=journal, progress=False)
    for letter, choice in zip(letters, choices):
        assert len(choice["candidates"]) == 3 and choice["candidates"][choice["chosen"]]["letter"] == letter
        assert all(c["mbr"] is not None and isinstance(c["failures"], list) for c in choice["candidates"])
    counter = CountGenerate(monkeypatch)
    with Journal(tmp_path / "j.jsonl", {"k": 1}) as journal:
        again = generate_chosen_letters(model, tok, texts, fields, 3, "grounded-mbr", decoding, batch_size=2,
                                        journal=journal, progress=False)
    assert counter.calls == 0 and again == (letters, choices)
    # seeded: a fresh pass gives the same candidates
    assert generate_chosen_letters(model, tok, texts, fields, 3, "grounded-mbr", decoding, batch_size=2,
                                   progress=False) == (letters, choices)


# ---------------------------------------------------------------- classifier-mbr


GOOD = ("Dear Hiring Manager, I am applying for the Data Analyst role at Brightwave. For three years as a Data "
        "Analyst at Foxglove I have written the SQL queries and Python scripts behind the weekly sales reports, "
        "checked the numbers with the finance team and explained them to managers who do not read code. I would "
        "bring the same care for accurate data and clear reporting to your analytics team. Sincerely, Ann Lee")
TEMPLATE = ("Dear Hiring Manager, I am applying for the Data Analyst role at Brightwave. I am a hard-working team "
            "player with a passion for excellence and I am {x} that I would be a great fit. Sincerely, Ann Lee "
            "[Your Phone Number]")


def test_classifier_mbr_drops_candidates_scored_below_the_threshold():
    cands = [TEMPLATE.format(x="sure"), TEMPLATE.format(x="certain"), GOOD, TEMPLATE.format(x="confident")]
    assert choose(cands, "grounded-mbr", INPUTS).index != 2  # the templates are the consensus
    choice = choose(cands, "classifier-mbr", INPUTS, quality=[0.2, 0.1, 0.9, 0.3], threshold=0.5)
    assert choice.index == 2
    record = choice.record()
    assert [c["quality"] for c in record["candidates"]] == [0.2, 0.1, 0.9, 0.3]
    assert record["quality_threshold"] == 0.5 and record["select"] == "classifier-mbr"
    # every candidate below the threshold: the best-scored one
    assert choose(cands, "classifier-mbr", INPUTS, quality=[0.2, 0.1, 0.3, 0.4]).index == 3
    # the grounding check still comes first: a well-scored candidate with an invented number is dropped
    invented = GOOD.replace("three years", "9 years")
    assert choose([TEMPLATE.format(x="sure"), invented], "classifier-mbr", INPUTS, quality=[0.2, 0.99]).index == 0
    # quality scores are recorded with other selects too, and change nothing there
    other = choose(cands, "grounded-mbr", INPUTS, quality=[0.2, 0.1, 0.9, 0.3])
    assert other.index == choose(cands, "grounded-mbr", INPUTS).index
    assert "quality_threshold" not in other.record() and other.record()["candidates"][2]["quality"] == 0.9
    with pytest.raises(ValueError, match="classifier-mbr needs the letter-quality classifier"):
        choose(cands, "classifier-mbr", INPUTS)
    with pytest.raises(ValueError, match="3 quality scores for 4 candidates"):
        choose(cands, "classifier-mbr", INPUTS, quality=[0.1, 0.2, 0.3])


def test_summarise_reports_the_quality_of_greedy_and_chosen():
    cands = [TEMPLATE.format(x="sure"), TEMPLATE.format(x="certain"), GOOD]
    records_ = [choose(cands, "classifier-mbr", INPUTS, quality=[0.2, 0.4, 0.8]).record(),
                choose(cands, "classifier-mbr", INPUTS, quality=[0.6, 0.7, 0.9]).record()]
    summary = summarise(records_)
    assert summary["greedy_quality_mean"] == pytest.approx(0.4)
    assert summary["candidates_below_quality_threshold"] == 2
    assert summary["chosen_quality_mean"] == pytest.approx((0.8 + records_[1]["candidates"][records_[1]["chosen"]]["quality"]) / 2)


@pytest.fixture(scope="module")
def letter_classifier(flagged_train_records):
    from covertune.classify.model import LetterClassifier, examine_all

    rows = flagged_train_records[:200]
    checks, labels, _ = examine_all([r["cover_letter"] for r in rows], [records.inputs_of(r) for r in rows],
                                    [r["flags"] for r in rows])
    return LetterClassifier.fit([r["cover_letter"] for r in rows], checks, labels)


def test_a_trained_classifier_changes_the_choice(letter_classifier):
    cands = [TEMPLATE.format(x="sure"), TEMPLATE.format(x="certain"), GOOD, TEMPLATE.format(x="confident")]
    quality = letter_classifier.score(cands, [INPUTS] * len(cands))
    assert quality[2] >= 0.5 > max(quality[0], quality[1], quality[3])  # the placeholder makes the templates generic
    assert choose(cands, "grounded-mbr", INPUTS).index != 2
    assert choose(cands, "classifier-mbr", INPUTS, quality).index == 2


def test_chosen_letters_scored_by_the_classifier(tiny, prompts, letter_classifier):
    model, tok = tiny
    texts, fields = prompts
    decoding = Decoding(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0, seed=3)
    letters, choices = generate_chosen_letters(model, tok, texts, fields, 3, "classifier-mbr", decoding,
                                               batch_size=2, progress=False, classifier=letter_classifier,
                                               threshold=0.4)
    for i, (letter, choice) in enumerate(zip(letters, choices)):
        cands = choice["candidates"]
        expected = letter_classifier.score([c["letter"] for c in cands], [fields[i]] * 3)
        assert [c["quality"] for c in cands] == pytest.approx(expected, abs=1e-6)
        assert choice["quality_threshold"] == 0.4 and cands[choice["chosen"]]["letter"] == letter
    with pytest.raises(ValueError, match="needs a letter-quality classifier"):
        generate_chosen_letters(model, tok, texts, fields, 3, "classifier-mbr", decoding, progress=False)


def test_when_all_fail_an_empty_letter_is_chosen_last():
    # the empty letter has one failure, the written ones two (name and company missing): still a written one
    cands = ["", "I like data.", "I like numbers and data."]
    choice = choose(cands, "grounded-mbr", INPUTS)
    assert choice.reasons[0] == ["empty letter"] and len(choice.reasons[1]) == 2
    assert choice.index in (1, 2) and choice.letter
    assert choose(["", ""], "grounded-mbr", INPUTS).index == 0  # nothing written at all: the first
