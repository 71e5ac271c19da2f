"""Fitting the letter-quality classifier on a train split (out-of-fold scores, the validation report) and
filtering the train rows it scores low (the data stage's ``--classifier-filter``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
import numpy as np

from covertune.classify.model import CLASSIFIER_FILE, LetterClassifier, classifier_dir, examine_all, out_of_fold, precision_recall
from covertune.config.build import to_dict, validate
from covertune.config.stages import ClassifyConfig
from covertune.core import io
from covertune.core.records import FLAGS_FIELD, ID_FIELD, TARGET_FIELD, inputs_of

log = logging.getLogger(__name__)


def _examined(records: list[dict], min_words: int):
    return examine_all([r[TARGET_FIELD] for r in records], [inputs_of(r) for r in records],
                       [r.get(FLAGS_FIELD) for r in records], min_words)


def _score_frame(records: list[dict], labels, reasons, scores):
    import pandas as pd

    return pd.DataFrame({"id": [r[ID_FIELD] for r in records], "score": np.round(scores, 6), "rule_label": labels,
                         "rule_reasons": [" | ".join(x) for x in reasons]})


def fit_classifier(train: list[dict], validation: list[dict], cfg: ClassifyConfig, folder: Path,
                   hand: tuple[list[dict], list[dict]] | None = None, origin: str = "classify") -> dict:
    """Fit the classifier on ``train``, measure it, and write ``folder`` whole (classifier.json, the reports,
    the score tables). Returns the report, with the train rows' out-of-fold scores under ``oof``."""
    use_checks = cfg.features == "text+checks"
    t0 = time.perf_counter()
    x_train, y_train, why_train = _examined(train, cfg.min_words)
    letters = [r[TARGET_FIELD] for r in train]
    model = LetterClassifier.fit(letters, x_train, y_train, cfg.regularization_c, use_checks, cfg.seed, cfg.min_words)
    fit_s = time.perf_counter() - t0
    oof = out_of_fold(letters, x_train, y_train, cfg.regularization_c, use_checks, cfg.folds, cfg.seed, cfg.min_words)
    report = {"origin": origin, "config": to_dict(cfg), "label_rule": "covertune.classify.labels",
              "features": cfg.features, "vocabulary": len(model.vocabulary),
              "train": {"rows": len(train), "positive": int(sum(y_train)), "fit_seconds": round(fit_s, 3),
                        "out_of_fold": precision_recall(y_train, oof, cfg.threshold)}}
    x_val = None
    if validation:
        x_val, y_val, why_val = _examined(validation, cfg.min_words)
        val_scores = model.probabilities([r[TARGET_FIELD] for r in validation], x_val)
        report["validation"] = precision_recall(y_val, val_scores, cfg.threshold)
    if hand is not None:
        labels, recs = hand
        x_hand, y_rule, _ = _examined(recs, cfg.min_words)
        s = model.probabilities([r[TARGET_FIELD] for r in recs], x_hand)
        y_hand = [row["label"] for row in labels]
        report["hand_labels"] = {"file": cfg.hand_labels, **precision_recall(y_hand, s, cfg.threshold),
                                 "rule_vs_hand": precision_recall(y_hand, y_rule, 0.5),
                                 "rows_scored": [{"id": row["id"], "label": row["label"], "score": round(float(p), 4),
                                                  "rule_label": int(r)} for row, p, r in zip(labels, s, y_rule)]}
    other = "text" if use_checks else "text+checks"  # the same data, the other feature set, for comparison
    alt = LetterClassifier.fit(letters, x_train, y_train, cfg.regularization_c, not use_checks, cfg.seed, cfg.min_words)
    report["other_features"] = {"features": other}
    if validation:
        report["other_features"]["validation"] = precision_recall(
            y_val, alt.probabilities([r[TARGET_FIELD] for r in validation], x_val), cfg.threshold)
    if hand is not None:
        report["other_features"]["hand_labels"] = precision_recall(
            y_hand, alt.probabilities([r[TARGET_FIELD] for r in recs], x_hand), cfg.threshold)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    model.info = {"trained_on": len(train), "features": cfg.features, "c": cfg.regularization_c, "origin": origin}

    with io.atomic_dir(folder) as tmp:
        model.save(tmp / CLASSIFIER_FILE)
        io.write_json(tmp / "report.json", report)
        io.write_text(tmp / "report.md", render_markdown(report))
        io.write_csv(tmp / "train_scores.csv", _score_frame(train, y_train, why_train, oof))
        if validation:
            io.write_csv(tmp / "validation_scores.csv", _score_frame(validation, y_val, why_val, val_scores))
        else:
            io.write_csv(tmp / "validation_scores.csv", _score_frame([], [], [], []))
    return {**report, "oof": oof, "labels": y_train, "reasons": why_train}


def filter_train(train: list[dict], validation: list[dict], out, threshold: float, min_words: int,
                 seed: int) -> tuple[list[dict], dict]:
    """Fit the classifier on ``train`` (written to ``<out>/classifier/``) and drop the train rows whose
    out-of-fold score is below ``threshold``. Returns (kept rows, what the report says)."""
    cfg = ClassifyConfig(out=str(out), threshold=threshold, min_words=min_words, seed=seed)
    validate(cfg)
    result = fit_classifier(train, validation, cfg, classifier_dir(out), origin="data")
    kept, dropped = [], []
    for rec, score, label, reasons in zip(train, result["oof"], result["labels"], result["reasons"]):
        if score < threshold:
            dropped.append({"id": rec[ID_FIELD], "score": round(score, 4), "rule_label": label,
                            "rule_reasons": reasons})
        else:
            kept.append(rec)
    summary = {"threshold": threshold, "classifier": str(classifier_dir(out) / CLASSIFIER_FILE),
               "trained_on": len(train), "dropped": dropped, "kept": len(kept),
               "dropped_good_by_rule": sum(d["rule_label"] for d in dropped),
               "validation": result.get("validation")}
    log.info("classifier filter: %d of %d train rows scored below %.2f and were dropped", len(dropped), len(train),
             threshold)
    return kept, summary


def _pr_row(name: str, pr: dict) -> str:
    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    neg, pos = pr["negative_class"], pr["positive_class"]
    return (f"| {name} | {pr['rows']} ({pr['negative']} bad) | {f(neg['precision'])} | {f(neg['recall'])} | "
            f"{f(pos['precision'])} | {f(pos['recall'])} | {f(pr['accuracy'])} |")


def render_markdown(report: dict) -> str:
    t = report["train"]
    lines = ["# Letter-quality classifier", "",
             f"Logistic regression on {'TF-IDF word n-grams and the checks' if report['features'] == 'text+checks' else 'TF-IDF word n-grams'} "
             f"({report['vocabulary']} n-grams), fitted on {t['rows']} train letters ({t['positive']} good by the rule); "
             f"checking and fitting took {t['fit_seconds']:.2f} s; threshold {report['config']['threshold']}. Labels: the rule of "
             "covertune.classify.labels (too short, generic, an unsupported number or organisation, or the "
             "company missing: bad).", "",
             "A *bad* prediction is a score below the threshold. Precision and recall of each class:", "",
             "| slice | rows | bad: precision | bad: recall | good: precision | good: recall | accuracy |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             _pr_row("train, out of fold (rule labels)", t["out_of_fold"])]
    if "validation" in report:
        lines.append(_pr_row("validation (rule labels)", report["validation"]))
    if "hand_labels" in report:
        lines.append(_pr_row("hand-labelled slice", report["hand_labels"]))
        lines.append(_pr_row("the rule itself on the hand-labelled slice", report["hand_labels"]["rule_vs_hand"]))
    other = report.get("other_features", {})
    for key, name in (("validation", "validation (rule labels)"), ("hand_labels", "hand-labelled slice")):
        if key in other:
            lines.append(_pr_row(f"{name}, features {other['features']}", other[key]))
    lines += ["", f"Everything above (fits, out-of-fold folds, scoring) took {report['seconds']:.1f} s.", ""]
    return "\n".join(lines)
