"""`covertune evaluate`: an eval.csv scored (ROUGE-L, BERTScore, repetition, grounding), per example and
summarised on the full, fair and strict subsets.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
import pandas as pd

from covertune.config.build import validate
from covertune.config.stages import EvaluateConfig
from covertune.core import io, rundir
from covertune.core.md_text import run_relative
from covertune.core.progress import progress_bar
from covertune.core.prompt import try_parse_prompt
from covertune.core.records import EVAL_COLUMNS, MODEL_COLUMNS
from covertune.metrics import bertscore, summary

from covertune.metrics.evaluate import METRICS_FILE, RESULT_COLUMNS, RESULTS_FILE, SUMMARY_FILE, letter_scores, read_eval_csv
from covertune.training import tracking

log = logging.getLogger(__name__)

STAGE = "evaluate"


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
    inputs = [try_parse_prompt(p) for p in frame["prompt"]]
    parsed = sum(x is not None for x in inputs)
    if parsed < n:
        log.warning("%d of %d prompts are not in covertune's prompt schema: their grounding metrics are NaN",
                    n - parsed, n)

    # ---- score: text overlap, repetition and grounding per letter

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


def _file_id(path: Path, out: Path) -> dict:
    """The scored file: its path (relative to the run directory when inside it), size and mtime."""
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
