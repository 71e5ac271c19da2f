#!/usr/bin/env python
"""Choose again among recorded candidates with other selection settings, and write the eval.csv that
``covertune generate`` would have written with them, for ``covertune evaluate``: no letter is generated again.

The candidates are a generate run's ``candidates/<split>.fine_tuned.jsonl`` (gzipped or not: every candidate's
letter, the greedy one first); the inputs come from the split's records (``--split-jsonl``, row by row); the
choice is ``covertune.generation.select.choose`` with ``--select``, ``--select-repetition-weight`` and
``--select-skills-weight``, and the chosen letter gets ``--form`` (covertune.generation.letter_form). The
eval.csv given (``--eval-csv``, the run's own) supplies every other column; its fine-tuned letters are
replaced. The count of rows whose letter changed is printed.

    python bench/rechoose.py --eval-csv runs/x/eval.csv --split-jsonl runs/x/data/test.jsonl \\
        --candidates runs/x/candidates/test.fine_tuned.jsonl --select-skills-weight 0.2 --out runs/x_skills/eval.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-csv", required=True)
    ap.add_argument("--split-jsonl", required=True)
    ap.add_argument("--candidates", required=True)
    ap.add_argument("--select", default="grounded-mbr")
    ap.add_argument("--select-repetition-weight", type=float, default=0.0)
    ap.add_argument("--select-skills-weight", type=float, default=0.0)
    ap.add_argument("--form", default="auto")
    ap.add_argument("--column", default="fine_tuned_output")
    ap.add_argument("--out", required=True, help="the new eval.csv")
    a = ap.parse_args(argv)

    import pandas as pd

    from covertune.core import io
    from covertune.core.records import inputs_of
    from covertune.generation.letter_form import apply_form
    from covertune.generation.select import choose

    frame = pd.read_csv(a.eval_csv, dtype=str, keep_default_na=False)
    records = io.read_jsonl(a.split_jsonl)
    rows = sorted(io.read_jsonl(a.candidates), key=lambda r: r["index"])
    if not (len(frame) == len(records) == len(rows)):
        raise SystemExit(f"rows: {len(frame)} in {a.eval_csv}, {len(records)} in {a.split_jsonl}, "
                         f"{len(rows)} in {a.candidates}")
    letters, changed = [], 0
    for row, record, old in zip(rows, records, frame[a.column]):
        fields = inputs_of(record)
        texts = [c["letter"] for c in row["candidates"]]
        choice = choose(texts, a.select, fields, repetition_weight=a.select_repetition_weight,
                        skills_weight=a.select_skills_weight)
        letters.append(apply_form(choice.letter, a.form, fields))
        changed += letters[-1] != old
    frame[a.column] = letters
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    io.write_csv(a.out, frame)
    print(f"{changed} of {len(frame)} letters differ from {a.eval_csv}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
