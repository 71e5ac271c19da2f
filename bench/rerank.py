#!/usr/bin/env python
"""A reranker learned on the training split: which of a prompt's candidates is closest to the reference letter,
from what is known without the reference, measured on the validation split beside the shipped rule and the
oracle, and (``--test-*``, once, for the setting chosen on validation) on the test split.

Why it differs from the letter-quality classifier that made letters worse as a training filter: that filter
removed 18% of the training rows (less data for the model); the reranker removes no training data, it only
chooses among the candidates one model wrote for one prompt, and its target is the evaluation's own measure
(ROUGE-L F1 against the reference letter, centred on the prompt's mean, so it learns what makes one
candidate better than its siblings rather than which prompts are easy).

Features of each candidate (no reference needed): its MBR score and its distance to the prompt's best MBR
score, whether it passes the grounding check and its number of failures, skills coverage, repetition ratio,
length in characters (log, and relative to the prompt's median), whether it is the greedy letter, whether
it is a full letter. (The candidate's log-probability is not recorded by generate, so it is not a feature.)
Models: ridge regression and gradient-boosted trees (scikit-learn), each choosing among the same pool as
the shipped rule (the candidates that pass the grounding check; all of them when none does, as the
shipped rule's fewest-failures pool). The rule, fixed before the figures: the model with the best validation
ROUGE-L replaces the shipped rule (grounded MBR + 0.2 x skills coverage) only if it beats it by 0.01 with no
more letters holding an unsupported number.

    python bench/rerank.py --train-data runs/x/data/train.jsonl --train-candidates train_cands.jsonl.gz \\
        --val-data runs/x/data/validation.jsonl --val-candidates validation_cands.jsonl.gz --json rerank.json \\
        [--test-data ... --test-candidates ... --eval-csv runs/x/eval.csv --out runs/rerank/eval.csv --form auto]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from select_utilities import read_candidates, score_letters  # noqa: E402

FEATURES = ("mbr", "mbr_gap", "passes", "failures", "skills", "repetition", "log_chars", "rel_chars", "greedy",
            "full")
SHIPPED_SKILLS_WEIGHT = 0.2


def features(row: dict, record: dict) -> tuple[list[list[float]], list[int], int]:
    """Each candidate's features, the pool the choice is made in, and the shipped rule's pick."""
    from covertune.core.records import inputs_of
    from covertune.generation.letter_form import detect
    from covertune.generation.select import choose
    from covertune.metrics.grounding import skill_coverage
    from covertune.metrics.repetition import repetition_ratio

    fields = inputs_of(record)
    letters = [c["letter"] for c in row["candidates"]]
    mbr = [c["mbr"] if c.get("mbr") is not None else 0.0 for c in row["candidates"]]
    shipped = choose(letters, "grounded-mbr", fields, scores=mbr, skills_weight=SHIPPED_SKILLS_WEIGHT)
    failures = shipped.reasons
    passing = [k for k in range(len(letters)) if not failures[k]]
    fewest = min(len(f) for f in failures)
    pool = passing or [k for k in range(len(letters)) if len(failures[k]) == fewest and letters[k].strip()] or [0]
    chars = [len(t) for t in letters]
    median = statistics.median(chars) or 1
    out = []
    for k, text in enumerate(letters):
        total, named, _ = skill_coverage(text, fields.get("skillsets", ""))
        out.append([mbr[k], max(mbr) - mbr[k], float(not failures[k]), float(len(failures[k])),
                    named / total if total else 0.0, repetition_ratio(text), math.log1p(chars[k]),
                    chars[k] / median, float(k == 0), float(detect(text, fields.get("applicant_name", "")).full)])
    return out, pool, shipped.index


def table(records, rows):
    from covertune.metrics.rouge import rouge_l

    X, y, groups = [], [], []
    for g, (record, row) in enumerate(zip(records, rows)):
        feats, pool, shipped = features(row, record)
        scores = [rouge_l(record["cover_letter"], c["letter"]) for c in row["candidates"]]
        mean = statistics.fmean(scores)
        X += feats
        y += [s - mean for s in scores]
        groups.append({"start": len(X) - len(feats), "pool": pool, "shipped": shipped, "scores": scores})
    return X, y, groups


def models():
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {"ridge": make_pipeline(StandardScaler(), Ridge(alpha=1.0)),
            "boosted-trees": HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                           random_state=0)}


def picks(model, X, groups) -> list[int]:
    predicted = model.predict(X) if model is not None else None
    out = []
    for g in groups:
        out.append(max(g["pool"], key=lambda k: (predicted[g["start"] + k], -k)))
    return out


def score(records, rows, chosen: list[int]) -> dict:
    letters = [row["candidates"][k]["letter"] for row, k in zip(rows, chosen)]
    return score_letters(letters, records, bertscore=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-data", required=True)
    ap.add_argument("--train-candidates", required=True)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--val-candidates", required=True)
    ap.add_argument("--test-data")
    ap.add_argument("--test-candidates")
    ap.add_argument("--eval-csv", help="the test run's eval.csv: its other columns are kept (as bench/rechoose.py)")
    ap.add_argument("--out", help="the eval.csv with the reranker's test letters, for covertune evaluate")
    ap.add_argument("--form", default="auto")
    ap.add_argument("--margin", type=float, default=0.01)
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)

    train = read_candidates(a.train_data, a.train_candidates, subset=True)
    val = read_candidates(a.val_data, a.val_candidates, subset=True)
    Xt, yt, _ = table(*train)
    Xv, _, gv = table(*val)
    result = {"features": FEATURES, "train_prompts": len(train[1]), "train_candidates": len(Xt),
              "validation_prompts": len(val[1]), "validation": {}}
    shipped = [g["shipped"] for g in gv]
    result["validation"]["shipped rule"] = score(*val, shipped)
    result["validation"]["oracle (same pool)"] = score(*val, [max(g["pool"], key=lambda k: g["scores"][k]) for g in gv])
    fitted = {}
    for name, model in models().items():
        model.fit(Xt, yt)
        fitted[name] = model
        result["validation"][name] = score(*val, picks(model, Xv, gv))
        if name == "ridge":
            coef = model[-1].coef_
            result["ridge_coefficients"] = {f: round(float(c), 5) for f, c in zip(FEATURES, coef)}
    base = result["validation"]["shipped rule"]
    best = max(fitted, key=lambda n: result["validation"][n]["rouge_l"])
    fig = result["validation"][best]
    adopted = (fig["rouge_l"] >= base["rouge_l"] + a.margin
               and fig["letters_with_unsupported_numbers"] <= base["letters_with_unsupported_numbers"])
    result["best"], result["adopted"], result["margin"] = best, adopted, a.margin
    for name, figures in result["validation"].items():
        print("validation", name, json.dumps(figures), flush=True)
    print("best", best, "adopted" if adopted else "not adopted (the shipped rule stays)")
    if a.test_data and a.test_candidates and adopted:  # the test split, once, for the setting chosen on validation
        test = read_candidates(a.test_data, a.test_candidates, subset=True)
        Xs, _, gs = table(*test)
        chosen = picks(fitted[best], Xs, gs)
        result["test"] = {best: score(*test, chosen), "shipped rule": score(*test, [g["shipped"] for g in gs])}
        if a.eval_csv and a.out:
            import pandas as pd

            from covertune.core import io
            from covertune.core.records import inputs_of
            from covertune.generation.letter_form import apply_form

            frame = pd.read_csv(a.eval_csv, dtype=str, keep_default_na=False)
            if len(frame) != len(test[1]):
                raise SystemExit(f"{a.eval_csv}: {len(frame)} rows, {len(test[1])} prompts with candidates")
            frame["fine_tuned_output"] = [apply_form(row["candidates"][k]["letter"], a.form, inputs_of(record))
                                          for row, record, k in zip(test[1], test[0], chosen)]
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            io.write_csv(a.out, frame)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
