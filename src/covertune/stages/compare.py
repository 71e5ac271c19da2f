"""covertune compare: several runs' evaluate outputs side by side.

Reads each run folder's ``eval_summary.csv`` and ``metrics.json`` (what ``covertune evaluate`` wrote; the
reference experiment is included by pointing at its evaluated folder, e.g. ``docs/results/reference``) and
writes, in ``--out``: ``compare.md`` and ``compare.csv`` (one table per subset: a row per metric of the
metric registry, covertune.metrics.summary.METRICS, a column per run and model) and ``compare.html`` (the
same, self-contained, every text HTML-escaped). Runs whose BERTScore came from different scorers are
refused unless ``--allow-mixed-scorers``: their BERTScore numbers do not measure the same thing.
"""

from __future__ import annotations

import html
import json
import logging
import math
from importlib import resources
from pathlib import Path

import pandas as pd

from covertune.config.stages import CompareConfig
from covertune.core import io
from covertune.core.md_text import md_inline, no_nul, shown_path
from covertune.metrics.bertscore import NONE_HASH
from covertune.metrics.evaluate import METRICS_FILE, SUMMARY_FILE
from covertune.metrics.summary import METRICS, SUBSET_HELP, SUBSETS, is_nan

log = logging.getLogger(__name__)

MODEL_LABELS = {"base": "base", "fine_tuned": "fine-tuned"}
BERT_METRICS = ("bert_precision", "bert_recall", "bert_f1")
LENGTH_MEDIAN = "length_chars_median"
# many runs make a wide table: it scrolls inside the page, and run names wrap in the header
WIDE_TABLES = (".scroll { overflow-x: auto; } .scroll th { white-space: normal; min-width: 7em; } "
               ".scroll td:first-child { min-width: 15em; }")  # a row beside the registry's metrics: the median letter length


def compare(cfg: CompareConfig) -> str:
    bad = [m for m in cfg.models if m not in MODEL_LABELS]
    if bad:
        raise ValueError(f"models: unknown {', '.join(bad)}; choose from {', '.join(MODEL_LABELS)}")
    runs = load_runs(cfg)
    scorers = check_scorers(runs, cfg.allow_mixed_scorers)
    unknown = [s for s in cfg.subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"subsets: unknown {', '.join(unknown)}; choose from {', '.join(SUBSETS)}")
    tables = {s: side_by_side(runs, s, cfg.models) for s in cfg.subsets}
    tables = {s: t for s, t in tables.items() if len(t.columns)}
    if not tables:
        raise ValueError(f"none of the runs has results for the model(s) {', '.join(cfg.models)} in the "
                         f"subset(s) {', '.join(cfg.subsets)}")

    out = Path(cfg.out)
    io.write_csv(out / "compare.csv", to_csv(tables))
    for run in runs:  # as the pages show them: relative to this folder and to each run, never this machine's
        run["path"], run["input"] = shown_path(run["path"], Path.cwd()), shown_path(run["input"], run["path"])
    markdown = render_markdown(cfg.title, runs, tables, scorers)
    io.write_text(out / "compare.md", no_nul(markdown))
    io.write_text(out / "compare.html", no_nul(render_html(cfg.title, runs, tables, scorers)))
    full = next(iter(tables))
    return (f"compare: {len(runs)} runs -> {out / 'compare.md'}, {out / 'compare.csv'}, {out / 'compare.html'}\n\n"
            + _md_table(tables[full], scorers["mixed"]))


# ---------------------------------------------------------------------------------------- reading


def load_runs(cfg: CompareConfig) -> list[dict]:
    if len(cfg.runs) < 1:
        raise ValueError("compare: name at least one run folder (covertune compare RUN_DIR ...)")
    if cfg.labels and len(cfg.labels) != len(cfg.runs):
        raise ValueError(f"--labels: {len(cfg.labels)} label(s) for {len(cfg.runs)} run(s); give one label per run")
    names = [Path(p).name or str(p) for p in cfg.runs]
    labels = list(cfg.labels) or [n if names.count(n) == 1 else str(p) for n, p in zip(names, cfg.runs)]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--labels: the labels must differ; got {', '.join(labels)}")
    runs = []
    for label, path in zip(labels, cfg.runs):
        folder = Path(path)
        for name in (SUMMARY_FILE, METRICS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: run `covertune evaluate --out {folder}` "
                                        "first (compare reads the evaluate stage's outputs)")
        try:
            summary = pd.read_csv(folder / SUMMARY_FILE)
            metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        except (ValueError, pd.errors.ParserError) as e:
            raise ValueError(f"{folder}: cannot read the evaluate outputs ({e}); run `covertune evaluate --out "
                             f"{folder} --force` to write them again") from None
        need = {"subset", "model", "metric", "n", "mean", "median"}
        if not need <= set(summary.columns):
            raise ValueError(f"{folder / SUMMARY_FILE} lacks the column(s) {', '.join(sorted(need - set(summary.columns)))}; "
                             f"rerun `covertune evaluate --out {folder} --force`")
        scorer = (metrics.get("bertscore") or {}).get("hash") or NONE_HASH
        runs.append({"label": label, "path": str(folder), "summary": summary, "metrics": metrics,
                     "scorer": scorer, "rows": (metrics.get("input") or {}).get("rows"),
                     "input": (metrics.get("input") or {}).get("path", "")})
    return runs


def scorer_identity(scorer_hash: str) -> str:
    """bert-score's hash without its version suffix: the model, layer, idf and baseline settings."""
    return scorer_hash.split("_version=")[0]


def check_scorers(runs: list[dict], allow_mixed: bool) -> dict:
    """The BERTScore scorers of the runs (runs that skipped BERTScore aside); an error when they differ,
    unless allowed. Differences in the library versions alone are noted, not refused."""
    scored = [r for r in runs if r["scorer"] != NONE_HASH]
    identities = {scorer_identity(r["scorer"]) for r in scored}
    mixed = len(identities) > 1
    if mixed and not allow_mixed:
        listing = "; ".join(f"{r['label']}: {r['scorer']}" for r in scored)
        raise ValueError(f"the runs' BERTScore comes from different scorers ({listing}): their BERTScore numbers "
                         "are not comparable. Score them again with one scorer (`covertune evaluate --out RUN "
                         "--force --bertscore-model ...`), or pass --allow-mixed-scorers")
    return {"mixed": mixed, "versions_differ": not mixed and len({r["scorer"] for r in scored}) > 1,
            "hashes": sorted({r["scorer"] for r in scored})}


# ---------------------------------------------------------------------------------------- the table


def side_by_side(runs: list[dict], subset: str, models: list[str]) -> pd.DataFrame:
    """Rows: the registry's metrics (and the median letter length); columns: (label, model) -> mean."""
    columns, ns = {}, {}
    for run in runs:
        part = run["summary"][run["summary"]["subset"] == subset]
        for model in models:
            rows = part[part["model"] == model]
            if rows.empty:
                continue
            key = (run["label"], model)
            by_metric = rows.set_index("metric")
            values = {m: float(by_metric.at[m, "mean"]) for m in METRICS if m in by_metric.index}
            if "length_chars" in by_metric.index:
                values[LENGTH_MEDIAN] = float(by_metric.at["length_chars", "median"])
            columns[key] = values
            ns[key] = int(rows["n"].max())
    order = [m for m in [*METRICS, LENGTH_MEDIAN]
             if any(not _missing(v.get(m)) for v in columns.values())]
    table = pd.DataFrame({k: [v.get(m, math.nan) for m in order] for k, v in columns.items()}, index=order)
    table.attrs["n"] = ns
    table.attrs["subset"] = subset
    return table


def metric_label(metric: str) -> str:
    if metric == LENGTH_MEDIAN:
        return "letter length, median (characters)"
    m = METRICS[metric]
    return m.label + {True: " ↑", False: " ↓", None: ""}[m.higher_is_better]


def column_label(key: tuple[str, str], n: int | None = None) -> str:
    label, model = key
    return f"{label} {MODEL_LABELS.get(model, model)}" + (f" (n={n})" if n is not None else "")


def best_cells(table: pd.DataFrame) -> dict[str, set]:
    """Per metric with a direction, the columns holding the best mean (ties included)."""
    out = {}
    for metric in table.index:
        higher = METRICS[metric].higher_is_better if metric in METRICS else None
        values = table.loc[metric].dropna()
        if higher is None or len(values) < 2:
            continue
        best = values.max() if higher else values.min()
        winners = {k for k, v in values.items() if math.isclose(v, best, rel_tol=1e-12, abs_tol=1e-12)}
        if len(winners) < len(values):  # a row where every column is equal has no best
            out[metric] = winners
    return out


def to_csv(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for subset, table in tables.items():
        ns = table.attrs["n"]
        rows.append({"subset": subset, "metric": "n", "label": "examples",
                     **{column_label(k): ns[k] for k in table.columns}})
        for metric in table.index:
            rows.append({"subset": subset, "metric": metric, "label": metric_label(metric),
                         **{column_label(k): table.at[metric, k] for k in table.columns}})
    return pd.DataFrame(rows)


def _missing(x) -> bool:
    return is_nan(x)


def _fmt(metric: str, x) -> str:
    """A cell as the registry formats its metric (the median length as the mean length); empty if missing."""
    return "" if is_nan(x) else METRICS.get(metric, METRICS["length_chars"]).format(x)


# ---------------------------------------------------------------------------------------- documents


def _runs_lines(runs: list[dict], scorers: dict) -> list[str]:
    each = scorers["mixed"] or scorers["versions_differ"]  # else one scorer line says it for all
    return [f"- **{md_inline(r['label'])}**: `{r['path']}` ({r['rows']} examples from `{r['input']}`"
            + (f"; BERTScore scorer `{r['scorer']}`)" if each else ")") for r in runs]


def _scorer_note(scorers: dict) -> str:
    if scorers["mixed"]:
        return ("**The runs' BERTScore comes from different scorers (--allow-mixed-scorers): the BERTScore rows "
                "are not comparable across runs.**")
    if scorers["versions_differ"]:
        return ("BERTScore: one scorer for every run, computed under different library versions: "
                + ", ".join(f"`{h}`" for h in scorers["hashes"]))
    return (f"BERTScore scorer: `{scorers['hashes'][0]}`" if scorers["hashes"]
            else "BERTScore was not computed for these runs.")


def _md_table(table: pd.DataFrame, mixed: bool) -> str:
    ns = table.attrs["n"]
    best = best_cells(table)
    lines = ["| metric | " + " | ".join(md_inline(column_label(k, ns[k])) for k in table.columns) + " |",
             "|---" * (len(table.columns) + 1) + "|"]
    for metric in table.index:
        cells = []
        for k in table.columns:
            text = _fmt(metric, table.at[metric, k])
            cells.append(f"**{text}**" if text and k in best.get(metric, ()) else text)
        label = metric_label(metric) + (" (scorers differ)" if mixed and metric in BERT_METRICS else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(title: str, runs: list[dict], tables: dict[str, pd.DataFrame], scorers: dict) -> str:
    lines = [f"# {md_inline(title)}", "", *_runs_lines(runs, scorers), "", _scorer_note(scorers), "",
             "Means per letter; ↑ higher is better, ↓ lower is better; the best of each row in bold.", ""]
    for subset, table in tables.items():
        lines += [f"## {subset}: {SUBSET_HELP.get(subset, '')}", "", _md_table(table, scorers["mixed"])]
    return "\n".join(lines)


def render_html(title: str, runs: list[dict], tables: dict[str, pd.DataFrame], scorers: dict) -> str:
    e = html.escape
    css = resources.files("covertune").joinpath("report_assets", "report.css").read_text(encoding="utf-8")
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
             f"<style>{css}{WIDE_TABLES}</style></head><body><main>", f"<h1>{e(title)}</h1>", "<ul>"]
    each = scorers["mixed"] or scorers["versions_differ"]
    for r in runs:
        scorer = f"; BERTScore scorer <code>{e(r['scorer'])}</code>" if each else ""
        parts.append(f"<li><b>{e(r['label'])}</b>: <code>{e(r['path'])}</code> ({e(str(r['rows']))} examples "
                     f"from <code>{e(r['input'])}</code>{scorer})</li>")
    note = _scorer_note(scorers).replace("**", "").replace("`", "")
    parts.append(f"</ul><p class=\"{'bad' if scorers['mixed'] else 'meta'}\">{e(note)}</p>")
    parts.append("<p class=\"note\">Means per letter; ↑ higher is better, ↓ lower is better; the best of each "
                 "row in bold.</p>")
    for subset, table in tables.items():
        ns, best = table.attrs["n"], best_cells(table)
        parts.append(f"<h2>{e(subset)} <span class=\"sd\">{e(SUBSET_HELP.get(subset, ''))}</span></h2>")
        parts.append("<div class=\"scroll\"><table><thead><tr><th>metric</th>" + "".join(
            f"<th>{e(column_label(k))}<br><span class=\"sd\">n={ns[k]}</span></th>" for k in table.columns)
            + "</tr></thead><tbody>")
        for metric in table.index:
            label = metric_label(metric) + (" (scorers differ)" if scorers["mixed"] and metric in BERT_METRICS else "")
            cells = []
            for k in table.columns:
                text = e(_fmt(metric, table.at[metric, k]))
                cells.append(f"<td><b>{text}</b></td>" if text and k in best.get(metric, ()) else f"<td>{text}</td>")
            parts.append(f"<tr><td>{e(label)}</td>{''.join(cells)}</tr>")
        parts.append("</tbody></table></div>")
    parts.append("<footer>Written by <code>covertune compare</code> from each run's <code>eval_summary.csv</code> "
                 "and <code>metrics.json</code>.</footer></main></body></html>")
    return "\n".join(parts) + "\n"
