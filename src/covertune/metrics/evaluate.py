"""The evaluate stage: score an eval.csv (prompt, ground_truth, base_output, fine_tuned_output).

Top to bottom: read and check the CSV, score every model's letters against ``ground_truth`` (ROUGE-L,
BERTScore, repetition) and against the inputs parsed from ``prompt`` (grounding), then write, in the run
directory, ``results_per_example.csv``, ``eval_summary.csv`` and ``metrics.json``. A finished evaluation of
the same file (same path, size and modification time) with the same scorer is not redone unless forced.
"""

from __future__ import annotations

import csv
import logging
import time
from io import StringIO
from pathlib import Path

import pandas as pd

from covertune import io, rundir, tracking
from covertune.io import read_utf8
from covertune.config import EvaluateConfig, validate
from covertune.metrics import bertscore, grounding, summary
from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l
from covertune.prompt import COVER_LETTER_HEADER
from covertune.records import EVAL_COLUMNS, MODEL_COLUMNS, not_a_letter

log = logging.getLogger(__name__)

STAGE = "evaluate"
RESULTS_FILE, SUMMARY_FILE, METRICS_FILE = rundir.RESULTS_FILE, rundir.SUMMARY_FILE, rundir.METRICS_FILE
RESULT_COLUMNS: tuple[str, ...] = (
    "model", "prediction", "reference", "rougeL_f", "bert_precision", "bert_recall", "bert_f1",
    "repetition_ratio", "example", "length_chars", "empty_output", *grounding.GROUNDING_COLUMNS,
    "bertscore_hash", "prompt",
)


def evaluate(cfg: EvaluateConfig) -> str:
    validate(cfg)
    rundir.check_out(cfg.out)
    out = Path(cfg.out)
    path = Path(cfg.eval_csv) if cfg.eval_csv else rundir.eval_csv(out)
    if not path.is_file():
        hint = ("check --eval-csv" if cfg.eval_csv else
                f"run `covertune generate --out {out}` first, or pass --eval-csv")
        raise FileNotFoundError(f"{path} does not exist; {hint} (a CSV with the columns {', '.join(EVAL_COLUMNS)})")
    spec = bertscore.resolve(cfg.bertscore_model, cfg.bertscore_layers, cfg.bertscore_rescale)
    key = {"input": _file_id(path, out), "bertscore_hash": bertscore.scorer_hash(spec)}
    if not cfg.force and _complete(out, key):
        return f"evaluate: {out} already scored {path} (use --force to score again)"

    # ---- read and check
    frame, models = read_eval_csv(path)
    n = len(frame)
    log.info("scoring %d examples x %d model(s) from %s", n, len(models), path)
    inputs = [grounding.try_parse_prompt(p) for p in frame["prompt"]]
    parsed = sum(x is not None for x in inputs)
    if parsed < n:
        log.warning("%d of %d prompts are not in covertune's prompt schema: their grounding metrics are NaN",
                    n - parsed, n)

    # ---- score: text overlap, repetition and grounding per letter
    from covertune.progress import progress_bar

    t0 = time.time()
    rows = []
    for model in models:
        col = MODEL_COLUMNS[model]
        for i in progress_bar(range(n), desc=f"ROUGE-L + grounding ({model})", unit="letter"):
            letter, reference = frame.at[i, col], frame.at[i, "ground_truth"]
            rows.append({"model": model, "prediction": letter, "reference": reference, "example": i,
                         **letter_scores(letter, reference, inputs[i]), "prompt": frame.at[i, "prompt"]})
    t_overlap = time.time() - t0

    # ---- BERTScore: every (letter, reference) pair in one pass (each distinct text is encoded once,
    # in batches sorted by length: a reference shared by the base and fine-tuned letters too)
    t0 = time.time()
    P, R, F, scorer_hash = bertscore.bert_score([r["prediction"] for r in rows], [r["reference"] for r in rows],
                                                spec, device=cfg.device, batch_size=cfg.bertscore_batch_size)
    for j, row in enumerate(rows):
        row.update(bert_precision=P[j], bert_recall=R[j], bert_f1=F[j], bertscore_hash=scorer_hash)
    t_bert = time.time() - t0

    # ---- summarise and write
    results = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    masks = summary.subset_masks(frame, [MODEL_COLUMNS[m] for m in models])
    subsets = {name: [int(i) for i in frame.index[mask]] for name, mask in masks.items()}
    table = summary.summarize(results, subsets, models)
    table.insert(3, "bertscore_hash", scorer_hash)
    metrics = {
        "input": {**key["input"], "sha256": rundir.file_hash(path), "rows": n},
        "models": models,
        "bertscore": {"model": cfg.bertscore_model, "hash": scorer_hash,
                      "num_layers": spec.num_layers if spec else None, "idf": False,
                      "rescale_with_baseline": bool(spec and spec.rescale_with_baseline)},
        "rouge": {"variant": "rougeL", "use_stemmer": False, "summary": "plain mean"},
        "empty_outputs": {m: int(results.loc[results["model"] == m, "empty_output"].sum()) for m in models},
        "prompts_parsed": parsed,
        "subsets": summary.summary_json(table, subsets, models),
        "metric_info": {k: {"label": m.label, "higher_is_better": m.higher_is_better}
                        for k, m in summary.METRICS.items()},
        "seconds": {"overlap_and_grounding": round(t_overlap, 2), "bertscore": round(t_bert, 2)},
    }
    io.write_csv(out / RESULTS_FILE, results)
    io.write_csv(out / SUMMARY_FILE, table)
    io.write_json(out / METRICS_FILE, metrics)
    rundir.mark_done(out, STAGE, key)
    tracking.log_results(out, tracking.evaluation_scalars(metrics))  # the training's tracker runs, if any

    full = metrics["subsets"]["full"]["models"]
    headline = ", ".join(f"{m} {summary.fmt(full[m]['rougeL_f']['mean'])}" for m in models)
    bert = ", ".join(f"{m} {summary.fmt(full[m]['bert_f1']['mean'])}" for m in models) if spec else "skipped"
    return (f"evaluate: scored {n} examples x {len(models)} model(s) from {path} -> {out / RESULTS_FILE}, "
            f"{SUMMARY_FILE}, {METRICS_FILE}\n  ROUGE-L F1 (full): {headline}\n  BERTScore F1 (full): {bert} "
            f"[{scorer_hash}]")


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
                        "score. Keep only the letter (covertune.prompt.extract_letter)", path, echoed, col)
        headers = int(frame[col].str.contains(COVER_LETTER_HEADER, regex=False).sum()) - echoed
        if headers > 0:
            log.info("%s: %d %s cell(s) contain a %r section after the letter (the model went on writing); "
                     "scored as they are", path, headers, col, COVER_LETTER_HEADER)
        models.append(model)
    if not models:
        raise ValueError(f"{path}: the model column(s) {', '.join(cols)} are empty in every row; nothing to score")
    return frame, models


def _file_id(path: Path, out: Path) -> dict:
    """The scored file: its path (relative to the run directory when inside it), size and mtime."""
    from covertune.md_text import run_relative

    st = path.stat()
    return {"path": run_relative(path.resolve(), out), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _complete(out: Path, key: dict) -> bool:
    if not rundir.is_done(out, STAGE):
        return False
    if not all((out / f).is_file() for f in (RESULTS_FILE, SUMMARY_FILE, METRICS_FILE)):
        return False
    try:
        import json

        return json.loads(rundir.stage_marker(out, STAGE).read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        return False

