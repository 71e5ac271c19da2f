"""The evaluate stage: score an eval.csv (prompt, ground_truth, base_output, fine_tuned_output).

Top to bottom: read and check the CSV, score every model's letters against ``ground_truth`` (ROUGE-L,
BERTScore, repetition) and against the inputs parsed from ``prompt`` (grounding), then write, in the run
directory, ``results_per_example.csv``, ``eval_summary.csv`` and ``metrics.json``. A finished evaluation of
the same file (same path, size and modification time) with the same scorer is not redone unless forced.
"""

from __future__ import annotations

import csv
import logging
from io import StringIO
from pathlib import Path

import pandas as pd

from covertune.core import rundir
from covertune.core.io import read_utf8
from covertune.core.prompt import COVER_LETTER_HEADER
from covertune.core.records import EVAL_COLUMNS, MODEL_COLUMNS, not_a_letter
from covertune.metrics import grounding
from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l

log = logging.getLogger(__name__)

RESULTS_FILE, SUMMARY_FILE, METRICS_FILE = rundir.RESULTS_FILE, rundir.SUMMARY_FILE, rundir.METRICS_FILE
RESULT_COLUMNS: tuple[str, ...] = (
    "model", "prediction", "reference", "rougeL_f", "bert_precision", "bert_recall", "bert_f1",
    "repetition_ratio", "example", "length_chars", "empty_output", *grounding.GROUNDING_COLUMNS,
    "bertscore_hash", "prompt",
)


def letter_scores(letter: str, reference: str, inputs: dict[str, str] | None) -> dict:
    """One letter's scores but BERTScore: ROUGE-L F1 against ``reference``, repetition, length, emptiness
    and the grounding columns against ``inputs`` (the prompt's fields; None: unknown, NaN grounding)."""
    return {"rougeL_f": rouge_l(reference, letter), "repetition_ratio": repetition_ratio(letter),
            "length_chars": len(letter), "empty_output": float(not letter.strip()),
            **grounding.ground(letter, inputs)}


def read_eval_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The CSV as strings, checked; and the models it has outputs for (base, fine_tuned or both)."""
    text = read_utf8(path, "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) and score it again")
    header = next(csv.reader(StringIO(text)), [])
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise ValueError(f"{path}: the column(s) {', '.join(twice)} appear more than once in the header; keep "
                         "one column of each name (a second copy would be silently renamed and not scored)")
    try:
        frame = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty; expected a CSV with the header {','.join(EVAL_COLUMNS)}") from None
    except pd.errors.ParserError as e:
        raise ValueError(f"{path} is not a readable CSV ({e})") from None
    present = list(frame.columns)
    need = ["prompt", "ground_truth"]
    missing = [c for c in need if c not in present]
    cols = [c for c in MODEL_COLUMNS.values() if c in present]
    if not cols:
        missing += [c for c in MODEL_COLUMNS.values()]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)}; it has {', '.join(present) or 'none'}. "
                         f"Expected {', '.join(EVAL_COLUMNS)} (at least one of the two model columns)")
    if frame.empty:
        raise ValueError(f"{path} has a header but no rows")
    frame = frame.reset_index(drop=True)
    problems = []
    for i, text in enumerate(frame["ground_truth"]):
        if not text.strip():
            problems.append(f"example {i} (data row {i + 1}), column ground_truth: empty; every example needs a "
                            "reference letter (drop the row or fill it in)")
    for col in ["ground_truth", *cols]:
        for i, text in enumerate(frame[col]):
            if text.strip() and not_a_letter(text):
                problems.append(f"example {i} (data row {i + 1}), column {col}: {text.strip()[:20]!r} is not a "
                                "letter (a number or a missing-value marker); fix the cell, or leave it empty for "
                                "a missing output")
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"{path}: {len(problems)} bad cell(s):\n  " + "\n  ".join(problems[:10]) + more)
    models = []
    for model, col in MODEL_COLUMNS.items():
        if col not in cols:
            continue
        empty = int((frame[col].str.strip() == "").sum())
        if empty == len(frame):
            log.warning("%s: column %s is empty in every row: %s is not scored", path, col, model)
            continue
        if empty:
            log.warning("%s: %d empty %s cell(s): they score 0 and are counted in metrics.json", path, empty, col)
        echoed = int(frame[col].str.lstrip().str.startswith("### Job Description").sum())
        if echoed:
            log.warning("%s: %d %s cell(s) start with the prompt: they are scored as they are, which lowers every "
                        "score. Keep only the letter (covertune.core.prompt.extract_letter)", path, echoed, col)
        headers = int(frame[col].str.contains(COVER_LETTER_HEADER, regex=False).sum()) - echoed
        if headers > 0:
            log.info("%s: %d %s cell(s) contain a %r section after the letter (the model went on writing); "
                     "scored as they are", path, headers, col, COVER_LETTER_HEADER)
        models.append(model)
    if not models:
        raise ValueError(f"{path}: the model column(s) {', '.join(cols)} are empty in every row; nothing to score")
    return frame, models


