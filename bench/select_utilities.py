#!/usr/bin/env python
"""Selection rules beyond ROUGE-L MBR, measured on recorded candidates (the validation split), each beside
the oracle, so the headroom stays visible.

The candidates file is what ``covertune generate --candidates N`` records (``<out>/candidates/<split>.<model>.jsonl``:
every candidate's letter, the greedy one first); ``--data`` the split's records (``<out>/data/<split>.jsonl``:
the inputs and the reference letter). For every count n in ``--counts`` (a prompt's first n candidates: what
``--candidates n`` draws) every rule chooses one letter per prompt, and the chosen letters are scored against
the references as ``covertune evaluate`` scores them (ROUGE-L F1; BERTScore F1 with the embedded MiniLM
scorer; repetition; skills coverage; unsupported numbers and organisations; name and company mentions).

Rules (all but greedy and the oracles drop the candidates that fail the grounding check first, as
``grounded-mbr`` does; ``covertune.generation.select``):
- ``greedy``: candidate 0; ``grounded-mbr``: the shipped rule (mean ROUGE-L F1 against the other candidates);
- ``grounded-mbr+skills:W``: MBR score + W x the candidate's skills coverage (the share of the applicant's
  skills the letter names): ``choose`` with ``skills_weight`` W, as ``--select-skills-weight W`` chooses;
- ``grounded-bertscore-mbr``: the mean BERTScore F1 against the other candidates instead of ROUGE-L
  (``--bertscore``; each distinct letter encoded once);
- ``grounded-mix``: the mean of the ROUGE-L and BERTScore MBR scores;
- ``oracle``: the candidate with the highest ROUGE-L against the reference (it needs the reference: an upper
  bound, not a rule); ``grounded-oracle``: the same among the grounded candidates.

    python bench/select_utilities.py --data runs/x/data/validation.jsonl \\
        --candidates runs/x/candidates/validation.fine_tuned.jsonl --counts 8 16 --bertscore \\
        --json docs/results/shipped_smol_llamacpp/validation_select_utilities.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _mean(values) -> float:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(values) if values else float("nan")


def pairwise_bertscore(groups: list[list[str]]) -> list[list[list[float]]]:
    """For every prompt, the BERTScore F1 of every pair of its candidates (symmetric; 1.0 on the diagonal)."""
    from covertune.metrics.bertscore import bert_score, resolve

    spec = resolve("embedded")
    left, right, where = [], [], []
    for g, letters in enumerate(groups):
        for i in range(len(letters)):
            for j in range(i + 1, len(letters)):
                left.append(letters[i]), right.append(letters[j]), where.append((g, i, j))
    _, _, f1, _ = bert_score(left, right, spec, progress=False)
    out = [[[1.0] * len(letters) for _ in letters] for letters in groups]
    for (g, i, j), f in zip(where, f1):
        out[g][i][j] = out[g][j][i] = f
    return out


def read_candidates(data: str, candidates: str, subset: bool = False) -> tuple[list[dict], list[dict]]:
    """The split's records and the recorded candidates, row for row (sorted by index); ``subset``: the
    candidates cover only some of the records (generate --limit, a stopped run's journal), each matched to
    its record by its index. A SystemExit when the counts still differ."""
    from covertune.core import io

    records = io.read_jsonl(data)
    rows = sorted(io.read_jsonl(candidates), key=lambda r: r["index"])
    if subset:
        records = [records[r["index"]] for r in rows]
    if len(rows) != len(records):
        raise SystemExit(f"{candidates}: {len(rows)} prompts with candidates, {data}: {len(records)} records")
    return records, rows


def choose_all(letters: list[str], inputs: dict, truth: str, skill_weights: list[float],
               bert: list[list[float]] | None) -> dict[str, int]:
    """The index each rule chooses among ``letters``."""
    from covertune.generation.select import choose, mbr_scores
    from covertune.metrics.rouge import rouge_l

    n = len(letters)
    shipped = choose(letters, "grounded-mbr", inputs)  # the shipped rule, with every candidate's failures
    grounded = [k for k in range(n) if not shipped.reasons[k]] or [shipped.index]  # all fail: its pick alone
    mbr = shipped.scores or mbr_scores(letters)

    def best(score, among):
        return max(among, key=lambda k: (score[k], -k))

    chosen = {"greedy": 0, "grounded-mbr": shipped.index}
    for w in skill_weights:  # the product's own rule (--select-skills-weight)
        chosen[f"grounded-mbr+skills:{w:g}"] = choose(letters, "grounded-mbr", inputs, scores=mbr,
                                                      skills_weight=w).index
    if bert is not None:
        bmbr = [sum(bert[i][j] for j in range(n) if j != i) / max(n - 1, 1) for i in range(n)]
        chosen["grounded-bertscore-mbr"] = best(bmbr, grounded)
        chosen["grounded-mix"] = best([(a + b) / 2 for a, b in zip(mbr, bmbr)], grounded)
    truth_scores = [rouge_l(truth, t) for t in letters]
    chosen["oracle"] = best(truth_scores, range(n))
    chosen["grounded-oracle"] = best(truth_scores, grounded)
    return chosen


def score_letters(letters: list[str], records: list[dict], bertscore: bool) -> dict:
    from covertune.core.records import inputs_of
    from covertune.metrics.bertscore import bert_score, resolve
    from covertune.metrics.grounding import ground_details
    from covertune.metrics.repetition import repetition_ratio
    from covertune.metrics.rouge import rouge_l

    truths = [r["cover_letter"] for r in records]
    details = [ground_details(t, inputs_of(r)) for t, r in zip(letters, records)]
    out = {"rouge_l": round(_mean(rouge_l(t, p) for t, p in zip(truths, letters)), 4),
           "repetition": round(_mean(repetition_ratio(p) for p in letters), 4),
           "skills_coverage": round(_mean(d["skills_coverage"] for d in details), 4),
           "letters_with_unsupported_numbers": sum(bool(d["unsupported_numbers"]) for d in details),
           "letters_with_unsupported_orgs": sum(bool(d["unsupported_orgs"]) for d in details),
           "name_mentioned": round(_mean(d["name_mentioned"] for d in details), 4),
           "company_mentioned": round(_mean(d["company_mentioned"] for d in details), 4)}
    if bertscore:
        out["bertscore_f1"] = round(_mean(bert_score(letters, truths, resolve("embedded"), progress=False)[2]), 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the split's records (<out>/data/<split>.jsonl)")
    ap.add_argument("--candidates", required=True, help="the recorded candidates (.jsonl or .jsonl.gz)")
    ap.add_argument("--counts", type=int, nargs="+", default=[16])
    ap.add_argument("--skill-weights", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--bertscore", action="store_true", help="BERTScore-MBR rules and BERTScore F1 of the choices")
    ap.add_argument("--subset", action="store_true", help="the candidates cover only some of the records (generate "
                    "--limit): each row is matched to its record by its index")
    ap.add_argument("--json", required=True)
    a = ap.parse_args(argv)

    from covertune.core.records import inputs_of

    records, rows = read_candidates(a.data, a.candidates, a.subset)
    groups = [[c["letter"] for c in r["candidates"]] for r in rows]
    bert_all = pairwise_bertscore([g[:max(a.counts)] for g in groups]) if a.bertscore else None
    results = {"data": a.data, "candidates": a.candidates, "prompts": len(rows), "by_count": {}}
    for n in a.counts:
        if any(len(g) < n for g in groups):
            raise SystemExit(f"--counts {n}: some prompts have fewer candidates")
        picks: dict[str, list[str]] = {}
        for p, (g, record) in enumerate(zip(groups, records)):
            bert = [row[:n] for row in bert_all[p][:n]] if bert_all is not None else None
            for rule, k in choose_all(g[:n], inputs_of(record), record["cover_letter"], a.skill_weights,
                                      bert).items():
                picks.setdefault(rule, []).append(g[k])
        results["by_count"][str(n)] = table = {rule: score_letters(letters, records, a.bertscore)
                                               for rule, letters in picks.items()}
        for rule, figures in table.items():
            print(n, rule, json.dumps(figures), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
