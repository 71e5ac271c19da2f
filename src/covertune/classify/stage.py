"""``covertune classify train|score``: the letter-quality classifier of a run, and the data stage's filter.

``train`` fits the classifier (covertune.classify.model) on ``<out>/data/train.jsonl``, labelled by the rule
of covertune.classify.labels, and writes ``<out>/classifier/``:

| file | what |
| --- | --- |
| ``classifier.json`` | the model (JSON: vocabulary, IDF weights, coefficients; no pickle) |
| ``report.json``, ``report.md`` | precision/recall on the validation split labelled by the same rule, on a hand-labelled slice (``--hand-labels``), out of fold on train, and for a text-only model beside it; the training time |
| ``train_scores.csv`` | every train row's out-of-fold score (from a model fitted without it), label and reasons |
| ``validation_scores.csv`` | every validation row's score, label and reasons |

``score`` scores the letters of a split, or of an eval.csv's letter columns (the inputs parsed from its
prompts), into ``<out>/classifier/scores.<name>.csv``.

With ``covertune data --filter-classifier T`` the data stage trains the same classifier on the train rows
once the validation split is set aside, and drops the train rows whose out-of-fold score is below T; the
validation and test splits are never filtered, so validation scores stay comparable across recipes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from covertune import io, rundir
from covertune.classify.model import CLASSIFIER_FILE, LetterClassifier, examine_all, out_of_fold, precision_recall
from covertune.config import ClassifyConfig, to_dict, validate
from covertune.records import FLAGS_FIELD, ID_FIELD, MODEL_COLUMNS, TARGET_FIELD, inputs_of

log = logging.getLogger(__name__)

STAGE = "classify"
CLASSIFIER_DIR = "classifier"
OUTPUTS = (CLASSIFIER_FILE, "report.json", "report.md", "train_scores.csv", "validation_scores.csv")
HAND_LABEL_COLUMNS = ("id", "label", "reason")


def classifier_dir(out) -> Path:
    return Path(out) / CLASSIFIER_DIR


# ---------------------------------------------------------------- hand labels


def read_hand_labels(path: str | Path) -> list[dict]:
    """A hand-labelled slice: a CSV of ``id,label,reason`` (label 1: a good letter, 0: a bad one);
    one-line errors name the file, row and field."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hand labels {path} do not exist; pass a CSV of id,label,reason")
    text = io.read_utf8(path, "save the hand labels as UTF-8 CSV")
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in HAND_LABEL_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; the header must be id,label,reason")
    rows, seen = [], set()
    for n, row in enumerate(reader, 2):
        rid, label = (row["id"] or "").strip(), (row["label"] or "").strip()
        if not rid:
            raise ValueError(f"{path}: line {n}, field id is empty")
        if label not in ("0", "1"):
            raise ValueError(f"{path}: line {n} ({rid}), field label is {label!r}; write 1 (good) or 0 (bad)")
        if rid in seen:
            raise ValueError(f"{path}: line {n}, id {rid} is labelled twice")
        seen.add(rid)
        rows.append({"id": rid, "label": int(label), "reason": (row["reason"] or "").strip()})
    if not rows:
        raise ValueError(f"{path} holds no labelled rows")
    return rows


def _hand_slice(path: str, out, train_ids: set[str]) -> tuple[list[dict], list[dict]]:
    """(the hand labels, the records they name from the run's validation and test splits)."""
    labels = read_hand_labels(path)
    records = {}
    for split in ("validation", "test"):
        p = rundir.split_path(out, split)
        if p.exists():
            records.update({r[ID_FIELD]: r for r in io.read_jsonl(p)})
    for row in labels:
        if row["id"] in train_ids:
            raise ValueError(f"{path}: id {row['id']} is in the train split the classifier learns from; label rows "
                             "of the validation or test split")
        if row["id"] not in records:
            raise ValueError(f"{path}: id {row['id']} is in neither {rundir.split_path(out, 'validation')} nor the "
                             "test split; label rows the data stage wrote (ids as in its JSONL files)")
    return labels, [records[row["id"]] for row in labels]


# ---------------------------------------------------------------- training


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


# ---------------------------------------------------------------- the data stage's filter


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


# ---------------------------------------------------------------- the command


def classify(cfg: ClassifyConfig) -> str:
    validate(cfg)
    out = rundir.check_out(cfg.out)
    if cfg.action == "train":
        return _train(cfg, out)
    return _score(cfg, out)


def _train(cfg: ClassifyConfig, out: Path) -> str:
    folder = Path(cfg.classifier) if cfg.classifier else classifier_dir(out)
    data_info = rundir.stage_info(out, "data") or {}
    if (data_info.get("config") or {}).get("filter_classifier") and folder == classifier_dir(out) and not cfg.force:
        return (f"classify: {folder} was trained by the data stage (--filter-classifier) on the train split before "
                "filtering; skipped (--force trains again on the filtered split)")
    train = rundir.read_split(out, "train")
    val_path = rundir.split_path(out, "validation")
    validation = io.read_jsonl(val_path) if val_path.exists() else []
    hand_hash = rundir.file_hash(cfg.hand_labels) if cfg.hand_labels and Path(cfg.hand_labels).is_file() else None
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("out", "force", "action", "split", "eval_csv")}
    fp = rundir.fingerprint(settings, {"data/train.jsonl": rundir.file_hash(rundir.split_path(out, "train")),
                                       "data/validation.jsonl": rundir.path_hash(val_path), "hand_labels": hand_hash})
    complete = all((folder / f).exists() for f in OUTPUTS)
    if rundir.check_stage(out, STAGE, fp, complete, cfg.force, str(folder)):
        return f"classify: {folder} is complete; skipped (--force trains again)"
    hand = _hand_slice(cfg.hand_labels, out, {r[ID_FIELD] for r in train}) if cfg.hand_labels else None
    report = fit_classifier(train, validation, cfg, folder, hand)
    rundir.mark_done(out, STAGE, {"config": to_dict(cfg), "fingerprint": fp, "folder": str(folder)})
    pr = report.get("validation") or report["train"]["out_of_fold"]
    neg = pr["negative_class"]
    where = "validation" if "validation" in report else "train, out of fold"
    return (f"classify: wrote {folder}/{CLASSIFIER_FILE}, report.md and the score tables; {where}: bad letters "
            f"precision {_fmt(neg['precision'])}, recall {_fmt(neg['recall'])} (fit in {report['train']['fit_seconds']:.2f} s)")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _score(cfg: ClassifyConfig, out: Path) -> str:
    import pandas as pd

    path = Path(cfg.classifier) if cfg.classifier else classifier_dir(out)
    model = LetterClassifier.load(path)
    if cfg.eval_csv:
        from covertune.metrics.grounding import parse_prompt

        src = Path(cfg.eval_csv)
        if not src.is_file():
            raise FileNotFoundError(f"eval_csv {src} does not exist")
        frame = pd.read_csv(src, keep_default_na=False, dtype=str)
        columns = [c for c in ("ground_truth", *MODEL_COLUMNS.values()) if c in frame.columns]
        if "prompt" not in frame.columns or not columns:
            raise ValueError(f"{src}: needs a prompt column and a letter column (ground_truth, base_output or "
                             "fine_tuned_output)")
        inputs = []
        for n, prompt in enumerate(frame["prompt"], 2):
            try:
                inputs.append(parse_prompt(prompt))
            except ValueError as e:
                raise ValueError(f"{src}: line {n}, field prompt: {e}") from None
        rows = []
        for col in columns:
            letters = [str(x) for x in frame[col]]
            present = [i for i, t in enumerate(letters) if t.strip()]
            scores = model.score([letters[i] for i in present], [inputs[i] for i in present])
            _, labels, reasons = examine_all([letters[i] for i in present], [inputs[i] for i in present],
                                             [None] * len(present), model.min_words)
            rows += [{"row": i, "column": col, "score": round(s, 6), "rule_label": lab, "rule_reasons": " | ".join(r)}
                     for i, s, lab, r in zip(present, scores, labels, reasons)]
        name = src.stem
    else:
        records = rundir.read_split(out, cfg.split)
        letters = [r[TARGET_FIELD] for r in records]
        flags = [r.get(FLAGS_FIELD) for r in records]
        scores = model.score(letters, [inputs_of(r) for r in records], flags)
        _, labels, reasons = examine_all(letters, [inputs_of(r) for r in records], flags, model.min_words)
        rows = [{"row": i, "id": r[ID_FIELD], "column": TARGET_FIELD, "score": round(s, 6), "rule_label": lab,
                 "rule_reasons": " | ".join(why)}
                for i, (r, s, lab, why) in enumerate(zip(records, scores, labels, reasons))]
        name = cfg.split
    table = pd.DataFrame(rows)
    target = classifier_dir(out) / f"scores.{name}.csv"
    io.write_csv(target, table)
    parts = []
    for col, group in (table.groupby("column", sort=False) if len(table) else []):
        parts.append(f"{col}: mean score {group['score'].mean():.3f}, {int((group['score'] < cfg.threshold).sum())} of "
                     f"{len(group)} below {cfg.threshold}")
    return f"classify: wrote {target}; " + ("; ".join(parts) or "no letters to score")
