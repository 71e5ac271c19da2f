#!/usr/bin/env python
"""The letter forms side by side on one eval.csv: auto (the letters as written), full and body
(covertune.generation.letter_form), scored as `covertune evaluate` scores them.

For each form: ROUGE-L F1 (rouge-score's rougeL, as covertune.metrics.rouge) overall, on the rows whose
reference letter is a full letter (greeting and a sign-off naming the applicant) and on the other (body)
rows; the share of letters with a greeting, with a sign-off naming the applicant, and in full form; the
letters holding a number the inputs do not support, and those numbers in all. Each row's inputs come from
the split's JSONL (``--split-jsonl``, row by row) or else from the eval.csv's prompt.

``full`` is covertune's mechanism: the chosen letter completed (covertune.generation.letter_form.apply_form).
With ``--candidates`` (generate's candidates/<split>.fine_tuned.jsonl, gzipped or not) the alternative is
measured beside it: each row's letter chosen again among its candidates with full-form candidates
preferred among those that pass the grounding check (``prefer_full_choice``, with the MBR scores the file
records), then completed. The letters chosen again without a preference are checked against the
eval.csv's (the count that differ is printed).

    python bench/letter_form.py --eval-csv docs/results/smol_rslora/eval.csv \\
        --candidates docs/results/smol_rslora/candidates_test.fine_tuned.jsonl.gz --json /tmp/forms.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from covertune.core import io
from covertune.generation.letter_form import FORMS, apply_form, detect
from covertune.metrics.grounding import ground_details
from covertune.core.prompt import parse_prompt
from covertune.metrics.rouge import rouge_l  # noqa: E402
from covertune.core.records import inputs_of


def prefer_full_choice(record: dict, fields: dict) -> str:
    """The alternative mechanism for ``full``, measured here and not taken: among the candidates that pass
    the grounding check (all, when none does), those already in full form preferred, then the highest
    recorded MBR score (grounded MBR's order, ties to the earlier candidate)."""
    from covertune.generation.letter_form import is_full
    from covertune.generation.select import choose

    texts = [c["letter"] for c in record["candidates"]]
    scores = [c["mbr"] for c in record["candidates"]]
    usual = choose(texts, record["select"], fields, scores=scores)
    passing = [k for k in range(len(texts)) if not usual.reasons[k]] or list(range(len(texts)))
    full = [k for k in passing if is_full(texts[k], fields)]
    return texts[max(full, key=lambda k: (scores[k], -k))] if full else usual.letter


def letters_for(form: str, letters: list[str], fields: list[dict], choices: list[dict] | None) -> list[str]:
    if form == "full, full-form candidates preferred":
        letters = [prefer_full_choice(ch, f) for ch, f in zip(choices, fields)]
        form = "full"
    return [apply_form(text, form, f) for text, f in zip(letters, fields)]


def score(letters: list[str], references: list[str], fields: list[dict], ref_full: list[bool]) -> dict:
    rouge = [rouge_l(r, p) for r, p in zip(references, letters)]
    shapes = [detect(text, f.get("applicant_name", "")) for text, f in zip(letters, fields)]
    unsupported = [len(ground_details(text, f)["unsupported_numbers"]) for text, f in zip(letters, fields)]
    n = len(letters)

    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    return {"rougeL_f": mean(rouge),
            "rougeL_f_full_refs": mean([r for r, full in zip(rouge, ref_full) if full]),
            "rougeL_f_body_refs": mean([r for r, full in zip(rouge, ref_full) if not full]),
            "greeting_pct": round(100 * sum(s.greeting for s in shapes) / n, 1),
            "name_sign_off_pct": round(100 * sum(s.name_sign_off for s in shapes) / n, 1),
            "full_pct": round(100 * sum(s.full for s in shapes) / n, 1),
            "letters_with_unsupported_numbers": sum(u > 0 for u in unsupported),
            "unsupported_numbers": sum(unsupported)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval-csv", required=True)
    ap.add_argument("--split-jsonl", help="the split's rows (data/test.jsonl or validation.jsonl), for the inputs")
    ap.add_argument("--candidates", help="generate's candidates JSONL (.gz) of the same rows: full re-chooses")
    ap.add_argument("--column", default="fine_tuned_output")
    ap.add_argument("--json", help="write the table as JSON here too")
    args = ap.parse_args(argv)

    import pandas as pd

    frame = pd.read_csv(args.eval_csv, dtype=str, keep_default_na=False)
    if args.split_jsonl:
        rows = io.read_jsonl(args.split_jsonl)
        if len(rows) != len(frame):
            raise SystemExit(f"{args.split_jsonl} has {len(rows)} rows, {args.eval_csv} {len(frame)}")
        fields = [inputs_of(r) for r in rows]
    else:
        fields = [parse_prompt(p) for p in frame["prompt"]]
    references = frame["ground_truth"].tolist()
    letters = frame[args.column].tolist()
    choices = None
    if args.candidates:
        choices = sorted(io.read_jsonl(args.candidates), key=lambda c: c["index"])
        if len(choices) != len(frame):
            raise SystemExit(f"{args.candidates} has {len(choices)} rows, {args.eval_csv} {len(frame)}")
        from covertune.generation.select import choose

        again = [choose([c["letter"] for c in ch["candidates"]], ch["select"], f,
                        scores=[c["mbr"] for c in ch["candidates"]]).letter for ch, f in zip(choices, fields)]
        print(f"letters chosen again with form auto that differ from the eval.csv's: "
              f"{sum(a != b for a, b in zip(again, letters))} of {len(letters)}")
    ref_full = [detect(r, f.get("applicant_name", "")).full for r, f in zip(references, fields)]
    forms = [*FORMS, *(["full, full-form candidates preferred"] if choices is not None else [])]
    table = {form: score(letters_for(form, letters, fields, choices), references, fields, ref_full) for form in forms}
    table["reference"] = score(references, references, fields, ref_full)
    print(f"{len(letters)} rows; reference letters in full form: {sum(ref_full)}, body: {len(ref_full) - sum(ref_full)}")
    cols = list(next(iter(table.values())))
    print("| form | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for form, row in table.items():
        print(f"| {form} | " + " | ".join("" if row[c] is None else str(row[c]) for c in cols) + " |")
    if args.json:
        io.write_json(args.json, {"eval_csv": args.eval_csv, "candidates": args.candidates,
                                  "reference_full_rows": sum(ref_full), "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
