"""Summaries of the per-example results: subsets, mean/std/median per model and subset, relative change.

Subsets are the reference's: ``full`` (every example; an empty letter scores 0 and counts), ``fair``
(the reference letter and every model's letter longer than 350 characters) and ``strict`` (longer than
500). ``std`` is the sample standard deviation (ddof=1; NaN for a single value); NaN values (e.g.
BERTScore skipped, a field the inputs lack) are left out of each statistic and ``n`` counts the values
used.

``METRICS`` is the one registry of summarised metrics (label, direction, decimals) that evaluate, the
report, covertune compare and covertune sweep read; ``is_nan`` and ``fmt`` are the shared missing-value test and
number formatter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

SUBSETS: dict[str, int | None] = {"full": None, "fair": 350, "strict": 500}  # name -> letters longer than N chars
SUBSET_HELP = {
    "full": "every example",
    "fair": "reference and every model's letter longer than 350 characters",
    "strict": "reference and every model's letter longer than 500 characters",
}


def is_nan(x) -> bool:
    """Whether a value is missing: None, or a NaN of any float type (Python, numpy)."""
    if x is None:
        return True
    try:
        return math.isnan(x)
    except TypeError:
        return False


def fmt(x, digits: int = 4) -> str:
    """A number with ``digits`` decimals; "n/a" for a missing value."""
    return "n/a" if is_nan(x) else f"{float(x):.{digits}f}"


@dataclass(frozen=True)
class Metric:
    """One summarised metric: its key in the results, its label, its direction and its decimals."""

    name: str
    label: str
    higher_is_better: bool | None  # None: neither
    digits: int = 4

    def format(self, x) -> str:
        return fmt(x, self.digits)


# every summarised metric, in the order tables show them
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("rougeL_f", "ROUGE-L F1", True),
    Metric("bert_precision", "BERTScore precision", True),
    Metric("bert_recall", "BERTScore recall", True),
    Metric("bert_f1", "BERTScore F1", True),
    Metric("repetition_ratio", "repetition ratio", False),
    Metric("length_chars", "letter length (characters)", None, digits=1),
    Metric("name_mentioned", "applicant name mentioned (rate)", True),
    Metric("company_mentioned", "company mentioned (rate)", True),
    Metric("job_title_mentioned", "job title mentioned (rate)", True),
    Metric("skills_coverage", "skills coverage", True),
    Metric("numbers_claimed", "numbers claimed per letter", None),
    Metric("unsupported_numbers", "unsupported numbers per letter", False),
    Metric("any_unsupported_number", "letters with an unsupported number (share)", False),
    Metric("unsupported_orgs", "unsupported organisations per letter", False),
    Metric("any_unsupported_org", "letters with an unsupported organisation (share)", False),
    Metric("empty_output", "empty letters (share)", False),
)}


def subset_masks(frame: pd.DataFrame, model_columns: list[str]) -> dict[str, pd.Series]:
    """Boolean masks over the examples of an eval.csv frame, one per subset."""
    out = {}
    for name, min_chars in SUBSETS.items():
        mask = pd.Series(True, index=frame.index)
        if min_chars is not None:  # full: every example, empty letters included
            mask &= frame["ground_truth"].str.len() > min_chars
            for col in model_columns:
                mask &= frame[col].str.len() > min_chars
        out[name] = mask
    return out


def with_derived(results: pd.DataFrame) -> pd.DataFrame:
    """The results with the share-of-letters columns the summary reports."""
    out = results.copy()
    for src, dst in (("unsupported_numbers", "any_unsupported_number"), ("unsupported_orgs", "any_unsupported_org")):
        out[dst] = (out[src] > 0).astype(float).where(out[src].notna())
    return out


def _stats(values: pd.Series) -> dict:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return {"n": int(len(values)), "mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std()) if len(values) > 1 else math.nan,
            "median": float(values.median()) if len(values) else math.nan}


def summarize(results: pd.DataFrame, subsets: dict[str, list[int]], models: list[str]) -> pd.DataFrame:
    """Long table: one row per (subset, model, metric) with n, mean, std, median."""
    results = with_derived(results)
    rows = []
    for subset, examples in subsets.items():
        part = results[results["example"].isin(examples)]
        for model in models:
            sub = part[part["model"] == model]
            for metric in METRICS:
                if metric in sub:
                    rows.append({"subset": subset, "model": model, "metric": metric, **_stats(sub[metric])})
    return pd.DataFrame(rows, columns=["subset", "model", "metric", "n", "mean", "std", "median"])


def relative_change(new: float, old: float) -> float | None:
    """(new - old) / |old|; None when undefined (old 0 or either NaN)."""
    if is_nan(old) or is_nan(new) or old == 0:
        return None
    return (new - old) / abs(old)


def summary_json(summary: pd.DataFrame, subsets: dict[str, list[int]], models: list[str]) -> dict:
    """The summary as nested dicts: subset -> n, models -> metric -> stats, relative_change."""
    out = {}
    for subset, examples in subsets.items():
        part = summary[summary["subset"] == subset]
        entry = {"n": len(examples), "definition": SUBSET_HELP[subset], "models": {}}
        for model in models:
            rows = part[part["model"] == model]
            entry["models"][model] = {r.metric: {"mean": _num(r.mean), "std": _num(r.std), "median": _num(r.median),
                                                 "n": int(r.n)} for r in rows.itertuples()}
        if "base" in models and "fine_tuned" in models:
            base, ft = entry["models"]["base"], entry["models"]["fine_tuned"]
            entry["relative_change"] = {m: relative_change(_nan(ft[m]["mean"]), _nan(base[m]["mean"]))
                                        for m in base if m in ft}
        out[subset] = entry
    return out


def _num(x) -> float | None:
    """JSON-safe: NaN -> None."""
    return None if is_nan(x) else float(x)


def _nan(x) -> float:
    return math.nan if x is None else x
