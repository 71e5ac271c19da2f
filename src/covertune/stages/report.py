"""The report stage: plots, report.md and a self-contained report.html from the evaluate outputs.

Reads ``results_per_example.csv``, ``eval_summary.csv`` and ``metrics.json`` from the run directory and
writes there: PNG plots (mean ROUGE-L per model and subset, BERTScore P/R/F1, repetition ratio, ROUGE-L
against letter length, grounding rates), ``report.md`` (tables, plots linked) and ``report.html`` (the same
with the plots embedded as data URIs and no external assets), with side-by-side letters (reference, base,
fine-tuned) for the examples whose ROUGE-L improved most, least and about the median, their grounding
problems marked. Where ``covertune generate --candidates`` wrote ``<out>/candidates/*.jsonl``, a section
per file says what the choice among candidates did (covertune.generation.select.summarise).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from importlib import resources
from io import StringIO
from pathlib import Path

import pandas as pd

from covertune.config.build import validate
from covertune.config.stages import ReportConfig
from covertune.core import io, rundir
from covertune.core.io import read_utf8
from covertune.core.md_text import md_inline, no_nul, shown_path
from covertune.core.prompt import try_parse_prompt
from covertune.core.records import INPUT_FIELDS, SOURCE_COLUMNS
from covertune.core.rundir import METRICS_FILE, RESULTS_FILE, SUMMARY_FILE
from covertune.generation.select import summarise
from covertune.metrics.grounding import LIST_SEP
from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.summary import METRICS, SUBSET_HELP, fmt, is_nan
from covertune.training import tracking

log = logging.getLogger(__name__)

STAGE = "report"
MODEL_LABEL = {"base": "base", "fine_tuned": "fine-tuned"}
MODEL_COLOR = {"base": "#4c72b0", "fine_tuned": "#dd8452"}
PLOTS = {
    "rouge_l.png": "Mean ROUGE-L F1 per model and subset",
    "bertscore.png": "BERTScore precision, recall and F1 (means)",
    "repetition.png": "Mean repetition ratio (lower: less repetitive)",
    "rouge_vs_length.png": "ROUGE-L F1 against letter length, one point per letter",
    "grounding.png": "Grounding on the full set: mention rates and skills coverage; unsupported claims per letter",
}
WIDE_PLOTS = {"bertscore.png", "rouge_vs_length.png", "grounding.png"}
CARD_METRICS = ("rougeL_f", "bert_f1", "repetition_ratio", "unsupported_numbers", "unsupported_orgs", "skills_coverage")
FIELD_LABEL = {v: k for k, v in SOURCE_COLUMNS.items()}
NUMERIC = ["rougeL_f", "bert_precision", "bert_recall", "bert_f1", "repetition_ratio", "example", "length_chars",
           "empty_output", "name_mentioned", "company_mentioned", "job_title_mentioned", "skills_total",
           "skills_mentioned", "skills_coverage", "numbers_claimed", "unsupported_numbers", "unsupported_orgs"]


def report(cfg: ReportConfig) -> str:
    validate(cfg)
    rundir.check_out(cfg.out)
    out = Path(cfg.out)
    paths = {name: out / name for name in (RESULTS_FILE, SUMMARY_FILE, METRICS_FILE)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found; run `covertune evaluate --out {out}` first")
    if cfg.examples < 0:
        raise ValueError(f"examples must be >= 0, got {cfg.examples}")
    check_scores_current(out, read_metrics(paths[METRICS_FILE]))
    key = {"inputs": {p.name: p.stat().st_mtime_ns for p in paths.values()}, "title": cfg.title,
           "examples": cfg.examples,
           "candidates": {p.name: p.stat().st_mtime_ns for p in sorted((out / "candidates").glob("*.jsonl"))}}
    if not cfg.force and (out / "report.html").is_file():
        try:
            if rundir.stage_info(out, STAGE) == key:
                return f"report: {out / 'report.html'} is up to date (use --force to write it again)"
        except (OSError, ValueError):
            pass

    # ---- read
    results = read_results(paths[RESULTS_FILE])
    table = read_summary(paths[SUMMARY_FILE])
    metrics = read_metrics(paths[METRICS_FILE])
    models = [m for m in metrics.get("models", []) if m in set(results["model"])]
    if not models:
        raise ValueError(f"{paths[RESULTS_FILE]} has no rows for the models listed in {paths[METRICS_FILE]}")

    # ---- plots
    written = make_plots(out, results, table, metrics, models)

    # ---- examples: most, median and least improved by ROUGE-L
    groups = pick_examples(results, models, cfg.examples)

    # ---- grounded decoding: what choosing among candidates did (covertune generate --candidates)
    decoding = candidate_summaries(out)

    # ---- documents (the input as a page shows it: relative to the run, not this machine's folders)
    metrics = {**metrics, "input": {**metrics["input"], "path": shown_path(metrics["input"]["path"], out)}}
    io.write_text(out / "report.md", no_nul(render_markdown(cfg.title, metrics, models, written, groups, results)
                                            + _md_candidates(decoding)))
    io.write_text(out / "report.html", no_nul(render_html(cfg.title, out, metrics, models, written, groups, results)
                                              .replace("<footer>", _html_candidates(decoding) + "<footer>", 1)))
    rundir.mark_done(out, STAGE, key)
    tracking.log_results(out, figures=[out / name for name in written])  # the training's tracker runs, if any
    return (f"report: wrote {out / 'report.html'}, {out / 'report.md'} and {len(written)} plot(s) "
            f"({', '.join(written)})")


def check_scores_current(out: Path, metrics: dict) -> None:
    """The scores are of the eval.csv there now: a one-line error when it changed after evaluate (a new
    generate), as the stage fingerprints refuse stale outputs elsewhere."""
    scored = metrics.get("input") or {}
    if not scored.get("path"):
        return
    path = Path(scored["path"])
    path = path if path.is_absolute() else out / path
    if not path.is_file():
        return  # a run folder copied without its eval.csv (docs/results): nothing to compare with
    st = path.stat()
    if scored.get("sha256"):  # its contents: a copy or checkout of the run (new mtimes) is still current
        changed = rundir.file_hash(path) != scored["sha256"]
    else:
        changed = (st.st_size, st.st_mtime_ns) != (scored.get("size"), scored.get("mtime_ns"))
    if changed:
        raise ValueError(f"{path} changed after evaluate scored it (a new generate?): run `covertune evaluate "
                         f"--out {out}` first, then the report")


def _rerun(path: Path) -> str:
    return f"run `covertune evaluate --out {path.parent} --force` to write it again"


def _read_csv(path: Path, need: list[str], **kw) -> pd.DataFrame:
    """An evaluate output CSV; unreadable or incomplete: a one-line error naming the file."""
    text = read_utf8(path, _rerun(path))
    try:
        frame = pd.read_csv(StringIO(text), **kw)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise ValueError(f"{path} is not a readable CSV ({str(e).splitlines()[0]}); {_rerun(path)}") from None
    lacking = [c for c in need if c not in frame]
    if lacking:
        raise ValueError(f"{path} lacks the column(s) {', '.join(lacking)}; it was not written by "
                         f"`covertune evaluate`: {_rerun(path)}")
    return frame


def read_results(path: Path) -> pd.DataFrame:
    frame = _read_csv(path, ["model", "prediction", "reference", "rougeL_f", "example"], dtype=str,
                      keep_default_na=False)
    for col in NUMERIC:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    example = pd.to_numeric(frame["example"], errors="coerce")
    if example.isna().any():
        raise ValueError(f"{path}: the column example holds a value that is not a number; {_rerun(path)}")
    frame["example"] = example.astype(int)
    return frame


def read_summary(path: Path) -> pd.DataFrame:
    return _read_csv(path, ["subset", "model", "metric", "mean"])


def read_metrics(path: Path) -> dict:
    """metrics.json, checked for what the report reads; corrupt or incomplete: a one-line error."""
    try:
        metrics = json.loads(read_utf8(path, _rerun(path)))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         f"{_rerun(path)}") from None
    need = {"input": dict, "models": list, "bertscore": dict, "empty_outputs": dict, "subsets": dict}
    bad = [k for k, t in need.items() if not isinstance(metrics, dict) or not isinstance(metrics.get(k), t)]
    if not bad and "full" not in metrics["subsets"]:
        bad = ["subsets.full"]
    if bad:
        raise ValueError(f"{path} lacks {', '.join(bad)} (not written by `covertune evaluate`, or cut short); "
                         f"{_rerun(path)}")
    return metrics


# ------------------------------------------------------------------ plots


def make_plots(out: Path, results: pd.DataFrame, table: pd.DataFrame, metrics: dict, models: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subsets = list(metrics["subsets"])
    written = []

    def mean(subset, model, metric):
        rows = table[(table.subset == subset) & (table.model == model) & (table.metric == metric)]
        return float(rows["mean"].iloc[0]) if len(rows) else math.nan

    def bars(ax, metric, ylabel):
        width = 0.8 / len(models)
        for k, model in enumerate(models):
            xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(subsets))]
            ys = [mean(s, model, metric) for s in subsets]
            rects = ax.bar(xs, ys, width, label=MODEL_LABEL.get(model, model), color=MODEL_COLOR.get(model))
            ax.bar_label(rects, labels=[fmt(y, 3) for y in ys], padding=2, fontsize=9)
        ax.set_xticks(range(len(subsets)),
                      [f"{s}\n(n={metrics['subsets'][s]['n']})" for s in subsets])
        ax.set_ylabel(ylabel)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))

    # mean ROUGE-L
    fig, ax = plt.subplots(figsize=(7, 4))
    bars(ax, "rougeL_f", "mean ROUGE-L F1")
    ax.set_ylim(0, 1)
    ax.set_title("ROUGE-L F1 against the reference letters")
    io.save_figure(out / "rouge_l.png", fig)
    written.append("rouge_l.png")

    # BERTScore P/R/F1
    if results["bert_f1"].notna().any():
        fig, axes = plt.subplots(1, len(subsets), figsize=(4 * len(subsets) + 1, 4), sharey=True, squeeze=False)
        names = [("bert_precision", "P"), ("bert_recall", "R"), ("bert_f1", "F1")]
        width = 0.8 / len(models)
        values = [mean(s, m, k) for s in subsets for m in models for k, _ in names]
        low = max(0.0, math.floor((min(v for v in values if not is_nan(v)) - 0.1) * 10) / 10)
        for ax, subset in zip(axes[0], subsets):
            for k, model in enumerate(models):
                xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(names))]
                ys = [mean(subset, model, key) for key, _ in names]
                rects = ax.bar(xs, ys, width, label=MODEL_LABEL.get(model, model), color=MODEL_COLOR.get(model))
                ax.bar_label(rects, labels=[fmt(y, 3) for y in ys], padding=2, fontsize=8)
            ax.set_xticks(range(len(names)), [n for _, n in names])
            ax.set_title(f"{subset} (n={metrics['subsets'][subset]['n']})")
            ax.set_ylim(low, 1)
            ax.spines[["top", "right"]].set_visible(False)
        axes[0][0].set_ylabel("mean BERTScore")
        axes[0][-1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        fig.suptitle(f"BERTScore ({_short_hash(metrics['bertscore']['hash'])})", fontsize=10)
        io.save_figure(out / "bertscore.png", fig)
        written.append("bertscore.png")

    # repetition ratio, with the reference letters' own level for scale
    fig, ax = plt.subplots(figsize=(7, 4))
    bars(ax, "repetition_ratio", "mean repetition ratio")
    refs = results.drop_duplicates("example")["reference"]
    ref_rep = float(refs.map(repetition_ratio).mean())
    ax.axhline(ref_rep, color="#55a868", linestyle="--", linewidth=1, label=f"reference letters: {ref_rep:.3f}")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    ax.set_ylim(0, 1)
    ax.set_title("Repetition: 1 - unique words / words")
    io.save_figure(out / "repetition.png", fig)
    written.append("repetition.png")

    # ROUGE-L against letter length
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        part = results[results.model == model]
        ax.scatter(part["length_chars"], part["rougeL_f"], s=12, alpha=0.6, color=MODEL_COLOR.get(model),
                   edgecolors="none")
        ax.axvline(350, color="#999", linestyle=":", linewidth=1, label="fair: > 350 chars")
        ax.axvline(500, color="#666", linestyle="--", linewidth=1, label="strict: > 500 chars")
        ax.legend(frameon=False, fontsize=8, loc="upper right")
        ax.set_title(f"{MODEL_LABEL.get(model, model)} (n={len(part)})")
        ax.set_xlabel("letter length (characters)")
        ax.set_ylim(0, 1.02)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("ROUGE-L F1")
    io.save_figure(out / "rouge_vs_length.png", fig)
    written.append("rouge_vs_length.png")

    # grounding rates (full set)
    if results["name_mentioned"].notna().any() or results["unsupported_numbers"].notna().any():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
        rates = [("name_mentioned", "name"), ("company_mentioned", "company"), ("job_title_mentioned", "job title"),
                 ("skills_coverage", "skills\ncoverage")]
        counts = [("unsupported_numbers", "unsupported\nnumbers"), ("unsupported_orgs", "unsupported\norgs")]
        width = 0.8 / len(models)
        for ax, group, digits in ((ax1, rates, 2), (ax2, counts, 3)):
            for k, model in enumerate(models):
                xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(group))]
                ys = [mean("full", model, key) for key, _ in group]
                rects = ax.bar(xs, ys, width, label=MODEL_LABEL.get(model, model), color=MODEL_COLOR.get(model))
                ax.bar_label(rects, labels=[fmt(y, digits) for y in ys], padding=2, fontsize=8)
            ax.set_xticks(range(len(group)), [n for _, n in group])
            ax.spines[["top", "right"]].set_visible(False)
        ax1.set_ylim(0, 1.12)
        ax1.set_ylabel("share of letters (skills: mean share of listed skills)")
        ax1.set_title("Mentions of the inputs (higher is better)")
        ax2.set_ylabel("mean per letter")
        ax2.set_title("Unsupported claims (lower is better)")
        top = max([mean("full", m, k) for m in models for k, _ in counts if not is_nan(mean("full", m, k))] or [0])
        ax2.set_ylim(0, max(0.1, top * 1.25))
        ax2.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
        io.save_figure(out / "grounding.png", fig)
        written.append("grounding.png")
    return written


def _empties(metrics: dict) -> str:
    return ", ".join(f"{MODEL_LABEL.get(m, m)} {n}" for m, n in metrics["empty_outputs"].items())


def _short_hash(h: str) -> str:
    return h if len(h) < 90 else h[:87] + "..."


# ------------------------------------------------------------------ examples


def pick_examples(results: pd.DataFrame, models: list[str], k: int) -> list[tuple[str, str, list[int]]]:
    """[(group title, explanation, example indices)]: the most, median and least improved examples, and
    the examples whose letters make the most unsupported claims (these may repeat an example above)."""
    if k == 0:
        return []
    wide = results.pivot_table(index="example", columns="model", values="rougeL_f")
    if "base" in models and "fine_tuned" in models:
        score = (wide["fine_tuned"] - wide["base"]).dropna().sort_values(ascending=False)
        what = "fine-tuned minus base ROUGE-L"
        names = ("Most improved", "Median improvement", "Least improved")
    else:
        score = wide[models[0]].dropna().sort_values(ascending=False)
        what = f"{MODEL_LABEL.get(models[0], models[0])} ROUGE-L"
        names = ("Highest", "Median", "Lowest")
    idx = list(score.index)
    if not idx:
        return []
    mid = len(idx) // 2
    chosen = {
        names[0]: idx[:k],
        names[1]: idx[max(0, mid - k // 2): max(0, mid - k // 2) + k],
        names[2]: idx[-k:][::-1],
    }
    claims = results["unsupported_numbers"].fillna(0) + results["unsupported_orgs"].fillna(0)
    worst = claims.groupby(results["example"]).max().sort_values(ascending=False, kind="stable")
    worst = [e for e, c in worst.items() if c > 0][:k]
    out, used = [], set()
    for name, examples in chosen.items():
        examples = [e for e in examples if e not in used]
        used.update(examples)
        if examples:
            out.append((name, f"by {what}", [int(e) for e in examples]))
    if worst:
        out.append(("Most unsupported claims", "numbers and organisations not in the inputs, in any model's letter",
                    [int(e) for e in worst]))
    return out


def _row(results: pd.DataFrame, example: int, model: str) -> dict | None:
    part = results[(results.example == example) & (results.model == model)]
    return part.iloc[0].to_dict() if len(part) else None


def _split_list(value) -> list[str]:
    return [x for x in str(value or "").split(LIST_SEP) if x]


def _problems(row: dict) -> list[tuple[bool, str]]:
    """(ok, text) lines describing a letter's grounding."""
    lines = []
    for col, label in (("name_mentioned", "applicant name"), ("company_mentioned", "company"),
                       ("job_title_mentioned", "job title")):
        v = row.get(col)
        if not is_nan(v):
            lines.append((bool(v), f"{label} {'mentioned' if v else 'not mentioned'}"))
    total = row.get("skills_total")
    if not is_nan(total) and total > 0:
        missing = _split_list(row.get("skills_missing_list"))
        text = f"skills {int(row['skills_mentioned'])}/{int(total)} mentioned"
        lines.append((not missing, text + (f" (missing: {', '.join(missing)})" if missing else "")))
    nums, orgs = _split_list(row.get("unsupported_numbers_list")), _split_list(row.get("unsupported_orgs_list"))
    if not is_nan(row.get("unsupported_numbers")):
        lines.append((not nums, f"unsupported numbers: {', '.join(nums)}" if nums else "no unsupported numbers"))
    if not is_nan(row.get("unsupported_orgs")):
        lines.append((not orgs, f"unsupported organisations: {', '.join(orgs)}" if orgs
                      else "no unsupported organisations"))
    return lines


def highlight(text: str, numbers: list[str], orgs: list[str]) -> str:
    """HTML-escaped text with the unsupported numbers and organisations wrapped in <mark>."""
    spans = []
    for needles, cls in ((numbers, "num"), (orgs, "org")):
        for needle in dict.fromkeys(needles):
            words = [re.escape(w) for w in needle.split()]
            if not words:
                continue
            pat = re.compile(r"(?<![\w.$])" + r"\s+".join(words) + r"(?![\w%+])" if cls == "num"
                             else r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)")
            spans += [(m.start(), m.end(), cls) for m in pat.finditer(text)]
    spans.sort()
    out, pos = [], 0
    for start, end, cls in spans:
        if start < pos:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f'<mark class="{cls}">{html.escape(text[start:end])}</mark>')
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


# ------------------------------------------------------------------ markdown


def _summary_rows(metrics: dict, subset: str, models: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
    """Table header, rows and the metric of each row for one subset."""
    entry = metrics["subsets"][subset]
    header = ["metric", *[MODEL_LABEL.get(m, m) for m in models]]
    change = entry.get("relative_change")
    if change is not None:
        header.append("change (fine-tuned vs base)")
    rows, keys = [], []
    for key, metric in METRICS.items():
        stats = [entry["models"][m].get(key, {}) for m in models]
        if all(s.get("mean") is None for s in stats):
            continue
        keys.append(key)
        row = [metric.label + (" ↓" if metric.higher_is_better is False else "")]
        for s in stats:
            row.append(f"{metric.format(s.get('mean'))} ± {metric.format(s.get('std'))} "
                       f"(median {metric.format(s.get('median'))})")
        if change is not None:
            c = change.get(metric)
            row.append("n/a" if c is None else f"{c:+.1%}")
        rows.append(row)
    return header, rows, keys


CANDIDATE_ROWS = (
    ("letters", "letters"), ("candidates", "candidates"),
    ("not_greedy", "letters whose chosen candidate is not the greedy one"),
    ("greedy_failing", "letters whose greedy candidate fails the grounding check"),
    ("chosen_failing", "letters whose chosen candidate fails it"),
    ("all_failed", "letters where every candidate fails it"),
)


QUALITY_ROWS = (  # with a letter-quality classifier (covertune.classify)
    ("greedy_quality_mean", "mean classifier score of the greedy candidates"),
    ("chosen_quality_mean", "mean classifier score of the chosen candidates"),
    ("candidates_below_quality_threshold", "candidates scored below the classifier threshold"),
)


def candidate_summaries(out: Path) -> dict[str, dict]:
    """``covertune.generation.select.summarise`` of each ``<out>/candidates/<split>.<model>.jsonl``, by file stem."""

    found = {}
    for path in sorted((out / "candidates").glob("*.jsonl")):
        try:
            found[path.stem] = summarise(io.read_jsonl(path))
        except (KeyError, TypeError, ValueError) as e:
            log.warning("%s is not a candidates file of covertune generate (%s); left out of the report", path, e)
    return found


def _candidate_rows(summary: dict) -> list[tuple[str, str]]:
    rows = [(label, str(summary[k])) for k, label in CANDIDATE_ROWS]
    rows += [(f"candidates failing by: {kind}", str(n)) for kind, n in summary["candidates_failing_by_kind"].items()]
    rows += [(label, str(summary[k])) for k, label in QUALITY_ROWS if k in summary]
    return rows


def _md_candidates(decoding: dict[str, dict]) -> str:
    lines = []
    for name, summary in decoding.items():
        lines += [f"## Grounded decoding: {name} (select: {', '.join(summary['select'])})", "",
                  "| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in _candidate_rows(summary)] + [""]
    return "\n".join(lines) + ("\n" if lines else "")


def _html_candidates(decoding: dict[str, dict]) -> str:
    e = html.escape
    parts = []
    for name, summary in decoding.items():
        parts.append(f"<h2>Grounded decoding: {e(name)} <span class=\"sd\">select: "
                     f"{e(', '.join(summary['select']))}</span></h2><table><tbody>")
        parts += [f"<tr><td>{e(a)}</td><td>{e(b)}</td></tr>" for a, b in _candidate_rows(summary)]
        parts.append("</tbody></table>")
    return "\n".join(parts) + ("\n" if parts else "")


def render_markdown(title, metrics, models, plots, groups, results) -> str:
    lines = [f"# {md_inline(title)}", ""]
    lines += [f"- input: `{metrics['input']['path']}` ({metrics['input']['rows']} examples)",
              f"- models: {', '.join(MODEL_LABEL.get(m, m) for m in models)}",
              f"- BERTScore: `{metrics['bertscore']['hash']}` (rescaled with baseline: "
              f"{metrics['bertscore']['rescale_with_baseline']})",
              f"- empty letters: {_empties(metrics)}",
              "- ROUGE-L: rouge-score rougeL F1, no stemmer, plain mean; ↓ marks metrics where lower is better", ""]
    lines += ["## Plots", ""] + [f"![{PLOTS[p]}]({p})" for p in plots] + [""]
    for subset in metrics["subsets"]:
        entry = metrics["subsets"][subset]
        header, rows, _ = _summary_rows(metrics, subset, models)
        lines += [f"## Summary: {subset} (n={entry['n']}; {SUBSET_HELP.get(subset, '')})", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    if groups:
        lines += ["## Side-by-side letters", ""]
    for name, why, examples in groups:
        lines += [f"### {name} ({why})", ""]
        for e in examples:
            lines += _md_example(results, e, models)
    return "\n".join(lines) + "\n"


def _md_example(results, example, models) -> list[str]:
    rows = {m: _row(results, example, m) for m in models}
    first = next(r for r in rows.values() if r)
    scores = ", ".join(f"{MODEL_LABEL.get(m, m)} {fmt(r['rougeL_f'], 3)}" for m, r in rows.items() if r)
    out = [f"#### Example {example}: ROUGE-L {scores}", "", "**Reference**", "", *_fenced(first["reference"]), ""]
    for m, r in rows.items():
        if not r:
            continue
        out += [f"**{MODEL_LABEL.get(m, m)}**", "", *_fenced(r["prediction"] or "(empty)"), ""]
        out += [f"- {'✓' if ok else '✗'} {md_inline(text)}" for ok, text in _problems(r)] + [""]
    return out


def _fenced(text: str) -> list[str]:
    """A fenced code block holding ``text`` verbatim: the fence is one backtick longer than the longest
    run of backticks in the text (at least three), so no line of the text can close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]


# ------------------------------------------------------------------ html


def render_html(title, out, metrics, models, plots, groups, results) -> str:
    e = html.escape
    css = resources.files("covertune").joinpath("report_assets", "report.css").read_text(encoding="utf-8")
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{e(title)}</title>"
             f"<style>{css}</style></head><body><main>", f"<h1>{e(title)}</h1>"]
    parts.append(f"<p class=\"meta\">input: <code>{e(metrics['input']['path'])}</code> · "
                 f"{metrics['input']['rows']} examples · models: "
                 f"{e(', '.join(MODEL_LABEL.get(m, m) for m in models))}</p>")
    parts.append(f"<p class=\"meta\">BERTScore scorer: <code>{e(metrics['bertscore']['hash'])}</code> · rescaled "
                 f"with baseline: {e(str(metrics['bertscore']['rescale_with_baseline']))} · empty letters: "
                 f"{e(_empties(metrics))}</p>")
    parts.append(_cards(metrics, models))

    parts.append("<h2>Plots</h2><div class=\"plots\">")
    for name in plots:
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        wide = " class=\"wide\"" if name in WIDE_PLOTS else ""
        parts.append(f"<figure{wide}><img alt=\"{e(PLOTS[name])}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{e(PLOTS[name])}</figcaption></figure>")
    parts.append("</div>")

    parts.append("<h2>Summary tables</h2><p class=\"note\">mean ± sample std (median). ↓: lower is better. "
                 "Change: relative change of the mean, fine-tuned vs base; green where it is an improvement.</p>")
    for subset in metrics["subsets"]:
        entry = metrics["subsets"][subset]
        header, rows, metric_keys = _summary_rows(metrics, subset, models)
        parts.append(f"<h3>{e(subset)} <span class=\"sd\">n={entry['n']}: {e(SUBSET_HELP.get(subset, ''))}"
                     f"</span></h3><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) +
                     "</tr></thead><tbody>")
        for metric, row in zip(metric_keys, rows):
            cells = [f"<td>{e(row[0])}</td>"]
            for cell in row[1:1 + len(models)]:
                main, _, rest = cell.partition(" ± ")
                cells.append(f"<td>{e(main)} <span class=\"sd\">± {e(rest)}</span></td>")
            if len(row) > 1 + len(models):
                c = entry["relative_change"].get(metric)
                higher = METRICS[metric].higher_is_better
                cls = "" if c is None or c == 0 or higher is None else ("good" if (c > 0) == higher else "bad")
                cells.append(f"<td class=\"{cls}\">{e(row[-1])}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")

    if groups:
        parts.append("<h2>Side-by-side letters</h2><p class=\"note\">Marked in the letters: "
                     "<mark>unsupported numbers</mark> and <mark class=\"org\">unsupported organisations</mark> "
                     "(not in the inputs, and for numbers not a sum of the resume's numbers).</p>")
    for name, why, examples in groups:
        parts.append(f"<h3>{e(name)} <span class=\"sd\">({e(why)})</span></h3>")
        for example in examples:
            parts.append(_html_example(results, example, models))

    parts.append("<footer>Written by <code>covertune report</code>. Grounding rules are documented heuristics "
                 "(covertune.metrics.grounding): names, company and title matched as whole words, "
                 "skills split from the Skillsets field, numbers supported by the inputs or sums of the resume's "
                 "numbers, organisations found by organisation words and \"at &lt;Name&gt;\" cues.</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _cards(metrics: dict, models: list[str]) -> str:
    e = html.escape
    full = metrics["subsets"]["full"]
    cards = []
    for key in CARD_METRICS:
        metric = METRICS[key]
        vals = [full["models"][m].get(key, {}).get("mean") for m in models]
        if all(v is None for v in vals):
            continue
        label = metric.label
        value = " → ".join(metric.format(v) for v in vals)
        delta = ""
        c = full.get("relative_change", {}).get(key) if full.get("relative_change") else None
        if c is not None:
            cls = "delta-pos" if (c > 0) == metric.higher_is_better else "delta-neg"
            delta = f"<div class=\"d {cls}\">{c:+.1%}</div>"
        cards.append(f"<div class=\"card\"><div class=\"k\">{e(label)}</div>"
                     f"<div class=\"v\">{e(value)}</div>{delta}</div>")
    legend = " → ".join(MODEL_LABEL.get(m, m) for m in models)
    return (f"<p class=\"note\">Full set, {e(legend)}:</p><div class=\"cards\">" + "".join(cards) + "</div>")


def _html_example(results, example, models) -> str:
    e = html.escape
    rows = {m: _row(results, example, m) for m in models}
    first = next(r for r in rows.values() if r)
    inputs = try_parse_prompt(first.get("prompt", "") or "")
    title = f"Example {example}"
    if inputs:
        title += (f": {inputs['job_title'].strip()} at {inputs['hiring_company'].strip()}"
                  f" — {inputs['applicant_name'].strip()}")
    scores = []
    for m, r in rows.items():
        if r:
            scores.append(f"{MODEL_LABEL.get(m, m)} ROUGE-L {fmt(r['rougeL_f'], 3)}")
    if rows.get("base") and rows.get("fine_tuned"):
        d = rows["fine_tuned"]["rougeL_f"] - rows["base"]["rougeL_f"]
        scores.append(f"<span class=\"{'delta-pos' if d >= 0 else 'delta-neg'}\">Δ {d:+.3f}</span>")
    parts = [f"<section class=\"example\" id=\"example-{example}\"><header><div class=\"title\">{e(title)}</div>"
             f"<div class=\"scores\">" + " · ".join(s if s.startswith("<span") else e(s) for s in scores) +
             "</div></header>"]
    if inputs:
        parts.append("<details class=\"inputs\"><summary>Inputs (from the prompt)</summary><dl>" +
                     "".join(f"<dt>{e(FIELD_LABEL.get(k, k))}</dt><dd>{e(inputs[k]) or '<i>(empty)</i>'}</dd>"
                             for k in INPUT_FIELDS) + "</dl></details>")
    cols = [f"<div class=\"col reference\"><h4>Reference <span class=\"s\">{len(first['reference'])} chars</span>"
            f"</h4><div class=\"letter\">{e(first['reference'])}</div></div>"]
    for m, r in rows.items():
        if not r:
            continue
        letter = highlight(r["prediction"], _split_list(r.get("unsupported_numbers_list")),
                           _split_list(r.get("unsupported_orgs_list"))) or "<i>(empty)</i>"
        bert = "" if is_nan(r.get("bert_f1")) else f" · BERTScore F1 {fmt(r.get('bert_f1'), 3)}"
        checks = "".join(f"<li class=\"{'ok' if ok else 'no'}\">{'✓' if ok else '✗'} {e(text)}</li>"
                         for ok, text in _problems(r))
        cols.append(f"<div class=\"col {e(m)}\"><h4>{e(MODEL_LABEL.get(m, m))} <span class=\"s\">ROUGE-L "
                    f"{fmt(r['rougeL_f'], 3)}{bert} · {int(r['length_chars'])} chars</span></h4>"
                    f"<div class=\"letter\">{letter}</div><ul class=\"checks\">{checks}</ul></div>")
    parts.append(f"<div class=\"cols{'' if len(cols) == 3 else ' two'}\">" + "".join(cols) + "</div></section>")
    return "".join(parts)
