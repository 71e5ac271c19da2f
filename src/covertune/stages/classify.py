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
from pathlib import Path


from covertune.classify.fit import fit_classifier
from covertune.classify.model import CLASSIFIER_FILE, LetterClassifier, classifier_dir, examine_all
from covertune.config.build import to_dict, validate
from covertune.config.stages import ClassifyConfig
from covertune.core import io, rundir
from covertune.core.prompt import parse_prompt
from covertune.core.records import FLAGS_FIELD, ID_FIELD, MODEL_COLUMNS, TARGET_FIELD, inputs_of

log = logging.getLogger(__name__)

STAGE = "classify"
OUTPUTS = (CLASSIFIER_FILE, "report.json", "report.md", "train_scores.csv", "validation_scores.csv")
HAND_LABEL_COLUMNS = ("id", "label", "reason")


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


# ---------------------------------------------------------------- the data stage's filter


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
