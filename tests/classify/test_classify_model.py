"""classify.model: the classifier separates generic and ungrounded letters from good ones on real letters,
saves to JSON and loads back to the same scores, and refuses files that are not one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from covertune.classify.model import CLASSIFIER_FILE, LetterClassifier, examine_all, out_of_fold, precision_recall
from covertune.core.records import inputs_of

FIT_ROWS = 250  # fitted on the first rows; the rest are held out


def _examined(records):
    return examine_all([r["cover_letter"] for r in records], [inputs_of(r) for r in records],
                       [r["flags"] for r in records])


@pytest.fixture(scope="module")
def fitted(flagged_train_records):
    rows = flagged_train_records[:FIT_ROWS]
    checks, labels, _ = _examined(rows)
    assert 0 < sum(labels) < len(labels)  # both classes on this slice
    return {kind: LetterClassifier.fit([r["cover_letter"] for r in rows], checks, labels,
                                       use_checks=kind == "text+checks")
            for kind in ("text+checks", "text")}


def _held_out_good(records):
    held = records[FIT_ROWS:]
    _, labels, _ = _examined(held)
    return [r for r, y in zip(held, labels) if y == 1]


def _inject(rec: dict) -> dict[str, str]:
    """Two bad versions of a good held-out letter: an invented number of years and a template with a placeholder."""
    letter = rec["cover_letter"]
    ungrounded = letter.replace(". ", ". I bring 37 years of hands-on experience to every project. ", 1)
    generic = ("Dear Hiring Manager,\n\nI am writing to express my interest in the position at [Company Name]. I am "
               "a hard-working professional with a passion for excellence, and I believe my skills make me a strong "
               "candidate. I am a team player and a quick learner who is always eager to take on new challenges. I "
               "am confident that I would be a valuable addition to your team and I look forward to hearing from "
               "you.\n\nSincerely,\n[Your Name]")
    return {"ungrounded": ungrounded, "generic": generic}


def test_separates_injected_bad_letters_from_good_held_out_ones(fitted, flagged_train_records):
    model = fitted["text+checks"]
    good = _held_out_good(flagged_train_records)
    assert len(good) >= 30
    good_scores = model.score([r["cover_letter"] for r in good], [inputs_of(r) for r in good])
    bad = {"ungrounded": [], "generic": []}
    for rec in good:
        for kind, letter in _inject(rec).items():
            bad[kind] += model.score([letter], [inputs_of(rec)])
    assert np.mean(np.array(good_scores) >= 0.5) >= 0.9
    for kind, scores in bad.items():
        assert max(scores) < 0.5, kind  # every injected letter is scored bad
        assert np.mean(scores) < np.mean(good_scores) - 0.5, kind


def test_the_words_alone_tell_a_template_from_a_real_letter(fitted, flagged_train_records):
    model = fitted["text"]
    good = _held_out_good(flagged_train_records)
    good_scores = model.score([r["cover_letter"] for r in good], [inputs_of(r) for r in good])
    generic = model.score([_inject(r)["generic"] for r in good], [inputs_of(r) for r in good])
    assert np.mean(generic) < np.mean(good_scores)
    assert np.median(generic) < np.median(good_scores)


def test_saved_and_loaded_gives_the_same_scores(fitted, flagged_train_records, tmp_path):
    letters = [r["cover_letter"] for r in flagged_train_records[FIT_ROWS:]]
    inputs = [inputs_of(r) for r in flagged_train_records[FIT_ROWS:]]
    for kind, model in fitted.items():
        path = model.save(tmp_path / kind / CLASSIFIER_FILE)
        loaded = LetterClassifier.load(path.parent)  # a folder holding classifier.json loads too
        assert loaded.use_checks == (kind == "text+checks")
        assert loaded.score(letters, inputs) == pytest.approx(model.score(letters, inputs), abs=1e-12)
        assert json.loads(path.read_text())["format"] == "covertune-letter-classifier"


def test_scores_equal_scikit_learns_own_fitted_model(flagged_train_records):
    """The exported coefficients reproduce the fitted LogisticRegression's probabilities."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from covertune.classify.model import MIN_DF, TEXT_PARAMS

    rows = flagged_train_records[:FIT_ROWS]
    checks, labels, _ = _examined(rows)
    letters = [r["cover_letter"] for r in rows]
    model = LetterClassifier.fit(letters, checks, labels, c=2.0, seed=3)
    vec = TfidfVectorizer(**TEXT_PARAMS, min_df=MIN_DF)
    text = vec.fit_transform(letters)
    scale = np.where(checks.std(axis=0) > 0, checks.std(axis=0), 1.0)
    x = hstack([text, csr_matrix((checks - checks.mean(axis=0)) / scale)]).tocsr()
    ref = LogisticRegression(C=2.0, class_weight="balanced", max_iter=5000, random_state=3).fit(x, labels)
    held = flagged_train_records[FIT_ROWS:]
    h_checks, _, _ = _examined(held)
    h_text = vec.transform([r["cover_letter"] for r in held])
    h_x = hstack([h_text, csr_matrix((h_checks - checks.mean(axis=0)) / scale)]).tocsr()
    assert model.probabilities([r["cover_letter"] for r in held], h_checks) == pytest.approx(
        ref.predict_proba(h_x)[:, 1], abs=1e-9)


def test_out_of_fold_scores_come_from_models_without_the_row(flagged_train_records):
    rows = flagged_train_records[:120]
    checks, labels, _ = _examined(rows)
    letters = [r["cover_letter"] for r in rows]
    oof = out_of_fold(letters, checks, labels, folds=3, seed=0)
    in_sample = LetterClassifier.fit(letters, checks, labels).probabilities(letters, checks)
    assert len(oof) == len(rows) and all(0 <= s <= 1 for s in oof)
    assert not np.allclose(oof, in_sample)  # the model that scores a row never saw it
    with pytest.raises(ValueError, match="at least 2 letters of each class"):
        out_of_fold(letters[:3], checks[:3], [1, 1, 0])


def test_fit_needs_both_classes():
    with pytest.raises(ValueError, match="positive and negative letters"):
        LetterClassifier.fit(["a letter", "another"], np.zeros((2, 15)), [1, 1])


def test_precision_recall():
    pr = precision_recall([0, 0, 1, 1, 1], [0.1, 0.9, 0.2, 0.8, 0.7])
    assert pr["negative_class"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "true": 1, "predicted": 2, "actual": 2}
    assert pr["positive_class"]["precision"] == pytest.approx(2 / 3) and pr["positive_class"]["recall"] == pytest.approx(2 / 3)
    assert pr["accuracy"] == pytest.approx(0.6)


def test_bad_classifier_files_are_one_line_errors(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="covertune classify train"):
        LetterClassifier.load(tmp_path / "none.json")
    good = fitted["text"].to_json()
    cases = {
        "garbage.json": "{not json",
        "other.json": json.dumps({"format": "something-else"}),
        "version.json": json.dumps({**good, "version": 99}),
        "short.json": json.dumps({**good, "text": {**good["text"], "idf": good["text"]["idf"][:-1]}}),
        "checks.json": json.dumps({**good, "checks": {**good["checks"], "names": ["a"]}}),
        "nan.json": json.dumps({**good, "intercept": "nan"}),
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "intercept"}),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError) as err:
            LetterClassifier.load(tmp_path / name)
        message = str(err.value)
        assert name in message and "\n" not in message and "classify train --force" in message, message
