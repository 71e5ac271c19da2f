#!/usr/bin/env python
"""Choose grounded decoding's settings on the validation split, from candidates generated once.

Each ``--set PATH,TEMPERATURE,TOP_P[,VARIANT]`` is a candidates file that ``covertune generate --split validation
--models fine_tuned --candidates N`` wrote (``<out>/candidates/validation.fine_tuned.jsonl``) with that
sampling temperature and top-p (VARIANT names the adapter that wrote it when several are compared). For every set, every candidate count n in ``--counts`` (a prompt's first n
candidates: the greedy letter and the first n-1 samples, as ``--candidates n`` draws them) and every rule
in ``--selects``, the choice is made again with ``covertune.generation.select.choose`` and the chosen letters are
scored against the split's letters (``<out>/data/validation.jsonl``): ROUGE-L F1, repetition ratio,
unsupported numbers and organisations per letter, name and company mention rates. n = 1 is the greedy
letter alone. With ``--classifier`` (a ``classify train`` classifier.json), every candidate is scored by
the letter-quality classifier and ``classifier-mbr`` is made at each of ``--classifier-thresholds`` too.
Every MBR rule is made at each of ``--repetition-weights`` (``--select-repetition-weight``).

The rule, fixed before any result is seen: among the settings with at most ``--max-numbers`` unsupported
numbers per letter, no unsupported organisation, and name and company mention rates no lower than the
greedy letters (the first set's), and (with ``--max-repetition``) a repetition ratio at most that, the
highest validation ROUGE-L (ties: fewer candidates); when none qualifies, the fewest unsupported numbers per
letter, then ROUGE-L. Written: ``--json`` (every setting's figures and the choice)
and ``--args`` (the chosen setting as ``covertune generate`` options, for the test split).

    python bench/candidate_sweep.py --data runs/smol/data/validation.jsonl \\
        --set c_t07.jsonl,0.7,0.95 --set c_t10.jsonl,1.0,0.95 --json sweep.json --args chosen.args
    python bench/candidate_sweep.py ... --classifier runs/smol/classifier/classifier.json \\
        --classifier-thresholds 0.5 0.9 --selects mbr grounded-mbr
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _score_prompt(job):
    """Per prompt: for each (n, select), the chosen index and that letter's figures."""
    from covertune.metrics.grounding import ground_details
    from covertune.metrics.repetition import repetition_ratio
    from covertune.metrics.rouge import rouge_l
    from covertune.generation.select import choose

    letters, inputs, truth, counts, selects, classifier, thresholds, weights = job
    quality = _classifier(classifier).score(letters, [inputs] * len(letters)) if classifier else None
    out = {}
    cache = {}
    for n in counts:
        for select, t in [(s, None) for s in selects] + [("classifier-mbr", t) for t in (thresholds if classifier else [])]:
            q = quality[:n] if quality is not None else None
            for w in weights:
                k = 0 if n == 1 else choose(letters[:n], select, inputs, q, t if t is not None else 0.5, w).index
                if k not in cache:
                    d = ground_details(letters[k], inputs)
                    cache[k] = {"rouge_l": rouge_l(truth, letters[k]), "repetition": repetition_ratio(letters[k]),
                                "numbers": len(d["unsupported_numbers"]), "orgs": len(d["unsupported_orgs"]),
                                "name": d["name_mentioned"], "company": d["company_mentioned"]}
                out[_key(n, select, t, w)] = {"chosen": k, **cache[k], "quality": quality[k] if quality else None}
    return out


def _parse_set(spec: str) -> tuple[str, str, str, str]:
    """``PATH,TEMPERATURE,TOP_P[,VARIANT]`` -> its four parts (VARIANT "" when not given); PATH may hold commas."""
    head, last = spec.rsplit(",", 1)
    try:
        float(last)
    except ValueError:  # a variant name
        return (*head.rsplit(",", 2), last)
    return (*spec.rsplit(",", 2), "")


def _key(n, select, threshold=None, weight=0.0) -> str:
    return f"{n}:{select}" + ("" if threshold is None else f"@{threshold}") + (f"~{weight}" if weight else "")


_LOADED = {}


def _classifier(path):
    """The letter-quality classifier at ``path``, loaded once per worker process."""
    from covertune.classify.model import LetterClassifier

    if path not in _LOADED:
        _LOADED[path] = LetterClassifier.load(path)
    return _LOADED[path]


def _mean(values):
    values = [v for v in values if v == v]  # NaN: the input field was empty
    return statistics.fmean(values) if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the split's records (<out>/data/validation.jsonl)")
    ap.add_argument("--set", action="append", required=True, help="PATH,TEMPERATURE,TOP_P (repeatable)")
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 4, 8, 12, 16])
    ap.add_argument("--selects", nargs="+", default=["mbr", "grounded-mbr"])
    ap.add_argument("--classifier", help="a letter-quality classifier.json (covertune classify train): scores every "
                    "candidate and adds classifier-mbr at each --classifier-thresholds")
    ap.add_argument("--classifier-thresholds", type=float, nargs="+", default=[0.5])
    ap.add_argument("--repetition-weights", type=float, nargs="+", default=[0.0],
                    help="each MBR rule also with these --select-repetition-weight values")
    ap.add_argument("--max-numbers", type=float, default=0.005)
    ap.add_argument("--max-repetition", type=float, help="the chosen setting's repetition ratio at most this")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--json", required=True)
    ap.add_argument("--args", help="write the chosen setting here as covertune generate options")
    args = ap.parse_args(argv)

    from covertune.core import io
    from covertune.core.records import inputs_of

    records = io.read_jsonl(Path(args.data))
    truths = [str(r.get("cover_letter_raw") or r.get("cover_letter") or "").strip() for r in records]
    rows = []
    for spec in args.set:
        path, temperature, top_p, variant = _parse_set(spec)
        choices = io.read_jsonl(Path(path))
        if len(choices) != len(records):
            raise SystemExit(f"{path}: {len(choices)} rows, the split has {len(records)}")
        have = min(len(c["candidates"]) for c in choices)
        counts = [n for n in args.counts if n <= have]
        jobs = [([c["letter"] for c in ch["candidates"]], inputs_of(records[ch["index"]]), truths[ch["index"]],
                 counts, args.selects, args.classifier, args.classifier_thresholds, args.repetition_weights)
                for ch in choices]
        with ProcessPoolExecutor(args.workers) as pool:
            per_prompt = list(pool.map(_score_prompt, jobs, chunksize=4))
        extra = [("classifier-mbr", t) for t in args.classifier_thresholds] if args.classifier else []
        for n in counts:
            for select, t, w in ([("greedy", None, 0.0)] if n == 1 else
                                 [(s, t, w) for s, t in [(s, None) for s in args.selects] + extra
                                  for w in args.repetition_weights]):
                key = _key(n, args.selects[0]) if n == 1 else _key(n, select, t, w)
                got = [p[key] for p in per_prompt]
                quality = {"classifier_threshold": t,
                           "quality": round(_mean([g["quality"] for g in got]), 4)} if args.classifier else {}
                rows.append({"variant": variant, "temperature": float(temperature), "top_p": float(top_p),
                             "candidates": n, "select": select, "repetition_weight": w, **quality,
                             "letters": len(got),
                             "rouge_l": round(_mean([g["rouge_l"] for g in got]), 4),
                             "repetition": round(_mean([g["repetition"] for g in got]), 4),
                             "unsupported_numbers": round(_mean([g["numbers"] for g in got]), 4),
                             "unsupported_orgs": round(_mean([g["orgs"] for g in got]), 4),
                             "name_mentioned": round(_mean([g["name"] for g in got]), 4),
                             "company_mentioned": round(_mean([g["company"] for g in got]), 4),
                             "not_greedy": sum(g["chosen"] != 0 for g in got)})
    greedy = next(r for r in rows if r["select"] == "greedy")
    ok = [r for r in rows if r["select"] != "greedy" and r["unsupported_numbers"] <= args.max_numbers
          and r["unsupported_orgs"] == 0 and r["name_mentioned"] >= greedy["name_mentioned"]
          and r["company_mentioned"] >= greedy["company_mentioned"]
          and (args.max_repetition is None or r["repetition"] <= args.max_repetition)]
    if ok:
        best, rule = max(ok, key=lambda r: (r["rouge_l"], -r["candidates"])), "constraints met: best ROUGE-L"
    else:
        best = min((r for r in rows if r["select"] != "greedy"),
                   key=lambda r: (r["unsupported_numbers"], -r["rouge_l"], r["candidates"]))
        rule = "no setting met the constraints: fewest unsupported numbers, then ROUGE-L"
    result = {"data": args.data, "rows": rows, "chosen": best, "rule": rule, "max_numbers": args.max_numbers,
              "max_repetition": args.max_repetition}
    Path(args.json).write_text(json.dumps(result, indent=2))
    options = (f"--candidates {best['candidates']} --select {best['select']} "
               f"--candidate-temperature {best['temperature']} --candidate-top-p {best['top_p']}")
    if best["repetition_weight"]:
        options += f" --select-repetition-weight {best['repetition_weight']}"
    if best["select"] == "classifier-mbr":
        options += f" --classifier {args.classifier} --classifier-threshold {best['classifier_threshold']}"
    if args.args:
        Path(args.args).write_text(options + "\n")
    for r in rows:
        print(json.dumps(r))
    print("chosen:", options, f"({rule})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
