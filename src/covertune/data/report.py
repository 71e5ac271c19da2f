"""The data stage's report: report.json (all figures), report.md (readable) and PNG length plots."""

from __future__ import annotations

import statistics
from pathlib import Path

from covertune.core import io
from covertune.core.records import FLAGS_FIELD, ID_FIELD, TARGET_FIELD
from covertune.data.clean import RAW_FIELD, RULE_NAMES
from covertune.data.quality import FLAG_NAMES, flag_names, word_count

PLOTS = {
    "letter_words_by_split.png": "Letter length (words, cleaned) per split",
    "letter_chars_raw_vs_clean.png": "Letter length (characters) before and after cleaning",
    "letter_words_by_flag.png": "Letter length (words) of unflagged letters and of each letter flag",
}
EXAMPLES_PER_FLAG = 2


def flag_counts(records: list[dict]) -> dict:
    counts = {name: 0 for name in FLAG_NAMES}
    any_flag = 0
    for rec in records:
        names = set(flag_names(rec))
        any_flag += bool(names)
        for n in names:
            counts[n] += 1
    return {"rows": len(records), "any": any_flag, **counts}


def length_stats(records: list[dict]) -> dict:
    def stats(values):
        if not values:
            return {}
        return {"mean": round(statistics.fmean(values), 1), "median": statistics.median(values),
                "min": min(values), "max": max(values)}

    return {"words_raw": stats([word_count(r[RAW_FIELD]) for r in records]),
            "words_clean": stats([word_count(r[TARGET_FIELD]) for r in records]),
            "chars_raw": stats([len(r[RAW_FIELD]) for r in records]),
            "chars_clean": stats([len(r[TARGET_FIELD]) for r in records])}


def examples(records: list[dict], per_flag: int = EXAMPLES_PER_FLAG) -> list[dict]:
    """A few flagged rows per flag, first in source order: id, flag, reason, a letter excerpt."""
    out = []
    for name in FLAG_NAMES:
        hits = [(r, f) for r in records for f in r.get(FLAGS_FIELD, []) if f["flag"] == name][:per_flag]
        for rec, f in hits:
            text = rec["preferred_qualifications"] if name == "collapsed_bullets" else rec[TARGET_FIELD]
            out.append({"id": rec[ID_FIELD], "flag": name, "reason": f["reason"],
                        "excerpt": text[:220] + ("..." if len(text) > 220 else "")})
    return out


# ---------------------------------------------------------------- plots


def write_plots(written: dict[str, list[dict]], data_dir: Path) -> list[str]:
    """The length plots (PNG) of the written splits; returns their file names."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = [r for recs in written.values() for r in recs]
    names = list(PLOTS)
    word_bins = np.histogram_bin_edges([word_count(r[TARGET_FIELD]) for r in rows] or [0], bins=30)
    char_bins = np.histogram_bin_edges([len(r[f]) for r in rows for f in (RAW_FIELD, TARGET_FIELD)] or [0], bins=30)

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for split, recs in written.items():
        if recs:
            ax.hist([word_count(r[TARGET_FIELD]) for r in recs], bins=word_bins, histtype="step", density=True,
                    linewidth=1.5, label=f"{split} ({len(recs)})")
    ax.set(title=PLOTS[names[0]], xlabel="words", ylabel="share of letters (density)")
    ax.legend()
    io.save_figure(data_dir / names[0], fig)

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    changed = sum(r[RAW_FIELD] != r[TARGET_FIELD] for r in rows)
    ax.hist([len(r[RAW_FIELD]) for r in rows], bins=char_bins, histtype="step", linewidth=2, label="raw")
    ax.hist([len(r[TARGET_FIELD]) for r in rows], bins=char_bins, histtype="step", linewidth=1.2, linestyle="--",
            label=f"cleaned ({changed} of {len(rows)} letters changed)")
    ax.set(title=PLOTS[names[1]], xlabel="characters", ylabel="letters")
    ax.legend()
    io.save_figure(data_dir / names[1], fig)

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    groups = {"no flag": [r for r in rows if not flag_names(r)]}
    for flag in ("too_short", "no_greeting", "no_signoff", "generic"):
        groups[flag] = [r for r in rows if flag in flag_names(r)]
    for label, recs in groups.items():
        if recs:
            ax.hist([word_count(r[TARGET_FIELD]) for r in recs], bins=word_bins, histtype="step", linewidth=1.5,
                    label=f"{label} ({len(recs)})")
    ax.set(title=PLOTS[names[2]], xlabel="words (cleaned)", ylabel="letters")
    ax.legend()
    io.save_figure(data_dir / names[2], fig)
    return names


# ---------------------------------------------------------------- markdown


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return str(text).replace("\n", " ⏎ ").replace("|", "\\|")


def render_markdown(report: dict) -> str:
    r = report
    out = ["# Data report", "",
           f"Source: `{r['source']['data']}`. {r['source']['note']}", "",
           "Only the letters are cleaned; input fields are kept byte for byte. The test split is never "
           "filtered (test-split order is kept). Flagged rows are "
           + ("dropped from train/validation" if r["filtering"]["drop_flagged"] else "kept") + ".", ""]

    out += ["## Splits", ""]
    split_rows = []
    for name, s in r["splits"].items():
        split_rows.append([name, s["loaded"], s["invalid_dropped"], s["duplicates_removed"], s["test_overlap_dropped"],
                           s["flagged_dropped"], s.get("classifier_dropped", 0), s["moved_to_validation"], s["written"],
                           s["written_flagged"]])
    out += [_table(["split", "loaded", "over a limit or no letter, dropped", "exact duplicates removed",
                    "test-overlap dropped", "flagged dropped", "classifier dropped", "moved to validation", "written",
                    "written with a flag"], split_rows), ""]
    out += [f"Validation: {r['validation']}", ""]

    lim = r["limits"]
    prompt = (f"{lim['prompt_limit']:,} tokens of `{lim['model']}`'s tokenizer" if lim["prompt_limit"]
              else "no limit")
    field = f"{lim['max_field_chars']:,} characters" if lim["max_field_chars"] else "no limit"
    out += ["## Limits", "", f"Every field: {field}; every prompt: {prompt}; every letter: not empty and not a "
            "bare number. Rows that break one are dropped from train/validation (a test row is an error).", ""]
    if lim["dropped"]:
        out += [_table(["split", "id", "field", "reason"],
                       [[d["split"], f"`{d['id']}`", d["field"], _md_cell(d["reason"])] for d in lim["dropped"]]), ""]

    loaded = list(r["cleaning"])
    out += ["## Cleaning rules (letters changed)", ""]
    rule_rows = [[f"`{rule}`"] + [r["cleaning"][s][rule] for s in loaded]
                 + [sum(r["cleaning"][s][rule] for s in loaded)] for rule in RULE_NAMES]
    out += [_table(["rule"] + loaded + ["all"], rule_rows), ""]

    out += ["## Quality flags (rows as loaded)", ""]
    fl = r["flags"]
    flag_rows = []
    for name in ("any", *FLAG_NAMES):
        label = "any flag" if name == "any" else f"`{name}`"
        flag_rows.append([label] + [fl[s][name] for s in loaded] + [fl["all"][name], f"{fl['share'][name]:.1%}"])
    out += [_table(["flag"] + loaded + ["all", "share of all"], flag_rows), ""]

    cf = r.get("classifier_filter")
    if cf:
        out += ["## Letter-quality classifier filter", "",
                f"Train rows whose out-of-fold score from the letter-quality classifier (`{cf['classifier']}`, fitted "
                f"on the {cf['trained_on']} train rows) is below {cf['threshold']} were dropped: {len(cf['dropped'])} "
                f"rows ({cf['dropped_good_by_rule']} of them good by the labelling rule); {cf['kept']} kept. "
                "Validation and test are not filtered.", ""]
        if cf["dropped"]:
            out += [_table(["id", "score", "rule label", "rule reasons"],
                           [[f"`{d['id']}`", f"{d['score']:.3f}", "good" if d["rule_label"] else "bad",
                             _md_cell("; ".join(d["rule_reasons"]) or "-")] for d in cf["dropped"]]), ""]

    out += ["## Duplicates and train/test overlap", ""]
    dups = r["duplicates"]
    for split, items in dups.items():
        listed = ", ".join(f"`{d['id']}` = `{d['duplicate_of']}`" for d in items) or "none"
        action = "reported only" if split == "test" else "removed"
        out.append(f"- Exact duplicates in {split} ({action}): {len(items)}: {listed}")
    ov = r["test_overlap"]
    listed = ", ".join(f"`{o['id']}` ~ `{o['test_id']}`" + (" (same letter)" if o["same_letter"] else "")
                       for o in ov["rows"]) or "none"
    out.append(f"- Train rows whose 8 inputs equal a test row's: {len(ov['rows'])}: {listed}; "
               + (f"{ov['dropped']} dropped (after duplicate removal)" if ov["drop"] else "kept (drop_test_overlap is off)"))
    out.append("")

    out += ["## Flagged examples", ""]
    ex_rows = [[f"`{e['id']}`", f"`{e['flag']}`", _md_cell(e["reason"]), _md_cell(e["excerpt"])]
               for e in r["examples"]]
    out += [_table(["id", "flag", "reason", "excerpt (letter; Preferred Qualifications for collapsed_bullets)"],
                   ex_rows) if ex_rows else "No flagged rows.", ""]

    out += ["## Letter lengths (written splits)", ""]
    len_rows = []
    for split, st in r["lengths"].items():
        if st["words_clean"]:
            w, wr = st["words_clean"], st["words_raw"]
            len_rows.append([split, w["mean"], w["median"], w["min"], w["max"], wr["mean"]])
    out += [_table(["split", "words mean", "median", "min", "max", "raw words mean"], len_rows), ""]
    for name in r["plots"]:
        out += [f"![{PLOTS[name]}]({name})", ""]

    out += ["## Config", "", "```", *(f"{k}: {v!r}" for k, v in r["config"].items()), "```", ""]
    return "\n".join(out)
