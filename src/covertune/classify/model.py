"""The letter-quality classifier: logistic regression (scikit-learn) on TF-IDF word n-grams of the letter
and the standardised checks of covertune.classify.features; its score is the probability that a letter
is positive by the rule of covertune.classify.labels.

Saved as one JSON file (``classifier.json``): the vocabulary and IDF weights, the checks' means and
scales, the coefficients and the intercept. Loading it runs no code from the file (no pickle); the
loaded classifier computes exactly the fitted model's scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from covertune.classify.features import CHECKS, examine
from covertune.core import io

FORMAT = "covertune-letter-classifier"
VERSION = 1
TEXT_PARAMS = {"lowercase": True, "ngram_range": (1, 2), "sublinear_tf": True, "token_pattern": r"(?u)\b\w+\b"}
MIN_DF = 2  # a word n-gram must occur in two training letters to enter the vocabulary


def _vectorizer(vocabulary: dict[str, int] | None = None, min_df: int = MIN_DF):
    from sklearn.feature_extraction.text import TfidfVectorizer

    if vocabulary is not None:
        return TfidfVectorizer(**TEXT_PARAMS, vocabulary=vocabulary)
    return TfidfVectorizer(**TEXT_PARAMS, min_df=min_df)


@dataclass
class LetterClassifier:
    vocabulary: dict[str, int]
    idf: np.ndarray
    text_coef: np.ndarray
    check_mean: np.ndarray
    check_scale: np.ndarray
    check_coef: np.ndarray
    intercept: float
    use_checks: bool = True
    min_words: int = 50
    info: dict = field(default_factory=dict)

    # ------------------------------------------------------------ scoring

    def decision(self, letters: Sequence[str], checks: np.ndarray) -> np.ndarray:
        """The linear model's margin for each letter (``checks``: one row of CHECKS values per letter)."""
        vec = _vectorizer(self.vocabulary)
        vec.idf_ = self.idf
        margin = vec.transform(list(letters)) @ self.text_coef + self.intercept
        if self.use_checks:
            margin = margin + ((np.asarray(checks, dtype=float) - self.check_mean) / self.check_scale) @ self.check_coef
        return np.asarray(margin, dtype=float).ravel()

    def probabilities(self, letters: Sequence[str], checks: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision(letters, checks)))

    def score(self, letters: Sequence[str], inputs: Sequence[dict[str, str]],
              flags: Sequence[list[dict] | None] | None = None) -> list[float]:
        """The probability that each letter (written for the matching ``inputs``) is a good one; ``flags``
        are data-stage flags where known (else computed on each letter)."""
        if not letters:
            return []
        flags = flags if flags is not None else [None] * len(letters)
        checks = np.array([examine(t, i, f, self.min_words).checks for t, i, f in zip(letters, inputs, flags)])
        return [float(p) for p in self.probabilities(letters, checks)]

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(cls, letters: Sequence[str], checks: np.ndarray, labels: Sequence[int], c: float = 1.0,
            use_checks: bool = True, seed: int = 0, min_words: int = 50) -> "LetterClassifier":
        """Fit on letters, their checks (rows of CHECKS values) and their labels (both classes needed)."""
        from scipy.sparse import csr_matrix, hstack
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels, dtype=int)
        if len(set(labels.tolist())) < 2:
            raise ValueError(f"the classifier needs positive and negative letters to learn from; all {len(labels)} "
                             f"are {'positive' if labels.all() else 'negative'} by the rule")
        checks = np.asarray(checks, dtype=float)
        vec = _vectorizer(min_df=MIN_DF if len(letters) >= 20 else 1)
        text = vec.fit_transform(list(letters))
        mean, scale = checks.mean(axis=0), checks.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        x = hstack([text, csr_matrix((checks - mean) / scale)]).tocsr() if use_checks else text
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed)
        model.fit(x, labels)
        coef = model.coef_.ravel()
        n_text = text.shape[1]
        return cls({k: int(v) for k, v in vec.vocabulary_.items()}, np.asarray(vec.idf_, dtype=float),
                   coef[:n_text].copy(), mean, scale,
                   coef[n_text:].copy() if use_checks else np.zeros(len(CHECKS)), float(model.intercept_[0]),
                   use_checks, min_words)

    # ------------------------------------------------------------ saving

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": "logistic regression (scikit-learn)",
                "text": {**{k: list(v) if isinstance(v, tuple) else v for k, v in TEXT_PARAMS.items()},
                         "vocabulary": self.vocabulary, "idf": self.idf.tolist(), "coef": self.text_coef.tolist()},
                "checks": {"names": list(CHECKS), "use": self.use_checks, "mean": self.check_mean.tolist(),
                           "scale": self.check_scale.tolist(), "coef": self.check_coef.tolist()},
                "intercept": self.intercept, "min_words": self.min_words, "info": self.info}

    def save(self, path: str | Path) -> Path:
        return io.write_text(path, json.dumps(self.to_json(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LetterClassifier":
        """A classifier saved by ``save``; a one-line error naming the file when it is not one."""
        path = Path(path)
        if path.is_dir():
            path = path / CLASSIFIER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no letter-quality classifier at {path}: train one with `covertune classify "
                                    "train --out RUN` (or pass --classifier with its classifier.json)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}; this covertune reads version {VERSION}")
            text, checks = data["text"], data["checks"]
            if list(checks["names"]) != list(CHECKS):
                raise ValueError(f"its checks {checks['names']} are not this covertune's {list(CHECKS)}")
            vocabulary = {str(k): int(v) for k, v in text["vocabulary"].items()}
            idf, coef = np.asarray(text["idf"], dtype=float), np.asarray(text["coef"], dtype=float)
            arrays = [np.asarray(checks[k], dtype=float) for k in ("mean", "scale", "coef")]
            n = len(vocabulary)
            if len(idf) != n or len(coef) != n or sorted(vocabulary.values()) != list(range(n)):
                raise ValueError(f"its vocabulary ({n} n-grams), IDF weights ({len(idf)}) and text coefficients "
                                 f"({len(coef)}) do not match")
            if any(a.shape != (len(CHECKS),) for a in arrays) or not (arrays[1] > 0).all():
                raise ValueError("its check means, scales and coefficients are not one positive-scale value per check")
            intercept = float(data["intercept"])
            if not all(np.isfinite(a).all() for a in (idf, coef, *arrays)) or not math.isfinite(intercept):
                raise ValueError("it holds a value that is not a finite number")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise ValueError(f"{path} is not a readable letter-quality classifier ({what}); train it again with "
                             "`covertune classify train --force`") from None
        return cls(vocabulary, idf, coef, *arrays, intercept, bool(checks.get("use", True)),
                   int(data.get("min_words", 50)), dict(data.get("info") or {}))


CLASSIFIER_FILE = "classifier.json"


def examine_all(letters: Sequence[str], inputs: Sequence[dict[str, str]], flags: Sequence[list[dict] | None],
                min_words: int = 50):
    """Every letter examined (covertune.classify.features.examine): (checks matrix, labels, reasons)."""
    found = [examine(t, i, f, min_words) for t, i, f in zip(letters, inputs, flags)]
    return (np.array([e.checks for e in found], dtype=float).reshape(len(found), len(CHECKS)),
            [e.label for e in found], [e.reasons for e in found])


def out_of_fold(letters: Sequence[str], checks: np.ndarray, labels: Sequence[int], c: float = 1.0,
                use_checks: bool = True, folds: int = 5, seed: int = 0, min_words: int = 50) -> list[float]:
    """Each letter's score from a classifier fitted on the other folds (stratified, seeded), so no letter
    is scored by a model that saw it."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=int)
    smallest = min(int(labels.sum()), int(len(labels) - labels.sum()))
    folds = min(folds, smallest)
    if folds < 2:
        raise ValueError(f"out-of-fold scores need at least 2 letters of each class; the rule gives {int(labels.sum())} "
                         f"positive and {int(len(labels) - labels.sum())} negative")
    scores = np.zeros(len(labels))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held in split.split(np.zeros(len(labels)), labels):
        model = LetterClassifier.fit([letters[i] for i in fit_idx], checks[fit_idx], labels[fit_idx], c, use_checks,
                                     seed, min_words)
        scores[held] = model.probabilities([letters[i] for i in held], checks[held])
    return scores.tolist()


def precision_recall(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict:
    """Precision, recall and F1 of the negative class (the letters to drop: score below ``threshold``) and
    of the positive class, accuracy, and the counts."""
    y = np.asarray(labels, dtype=int)
    pred = (np.asarray(scores, dtype=float) >= threshold).astype(int)
    out = {"rows": int(len(y)), "positive": int(y.sum()), "negative": int(len(y) - y.sum()), "threshold": threshold,
           "accuracy": float((pred == y).mean()) if len(y) else None}
    for name, cls in (("negative", 0), ("positive", 1)):
        tp = int(((pred == cls) & (y == cls)).sum())
        predicted, actual = int((pred == cls).sum()), int((y == cls).sum())
        p = tp / predicted if predicted else None
        r = tp / actual if actual else None
        out[name + "_class"] = {"precision": p, "recall": r,
                                "f1": 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None),
                                "true": tp, "predicted": predicted, "actual": actual}
    return out


def load_classifier(path: str, out) -> tuple[object, Path]:
    """The letter-quality classifier for --select classifier-mbr: ``path`` (its classifier.json or folder),
    else ``<out>/classifier``; with the file it was read from."""

    target = Path(path).expanduser() if path else classifier_dir(out) if out else None
    if target is None:
        raise ValueError("--select classifier-mbr needs --classifier (a classifier.json from `covertune classify "
                         "train`) or --out with a trained classifier")
    file = target / CLASSIFIER_FILE if target.is_dir() else target
    return LetterClassifier.load(file), file


CLASSIFIER_DIR = "classifier"


def classifier_dir(out) -> Path:
    return Path(out) / CLASSIFIER_DIR
