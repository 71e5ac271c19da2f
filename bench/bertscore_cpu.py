"""BERTScore speed on the CPU: the evaluate stage's scoring of 698 letter pairs.

The pairs are the reference run's cleaned_eval.csv (349 test rows x base and fine-tuned letters, each
against its ground truth), scored by covertune.metrics.bertscore.bert_score with the embedded scorer
(all-MiniLM-L6-v2), as ``covertune evaluate`` does. Reported: wall seconds, pairs/s, the distinct texts
and their tokens, and the tokens the model computes (padding included) under covertune's length-sorted
batches and under bert-score's own ordering of the same texts (``--old`` also times the earlier path:
BERTScorer.score over chunks of 128 pairs in input order). The machine's load average is recorded
before and after: on shared cores it moves the figures.

    python bench/bertscore_cpu.py --eval-csv ../shared/data/reference-run/cleaned_eval.csv --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def padded_tokens(texts: list[str], length: dict, batch_size: int, key) -> int:
    order = sorted(texts, key=key)
    return sum(len(order[s:s + batch_size]) * max(length[t] for t in order[s:s + batch_size])
               for s in range(0, len(order), batch_size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-csv", required=True, help="an eval.csv with ground_truth, base_output, fine_tuned_output")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--old", action="store_true", help="also time the earlier chunked BERTScorer.score path")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    from bert_score.utils import sent_encode

    from covertune.metrics import bertscore

    frame = pd.read_csv(args.eval_csv, dtype=str, keep_default_na=False)
    refs = list(frame.ground_truth) * 2
    cands = list(frame.base_output) + list(frame.fine_tuned_output)
    spec = bertscore.resolve("embedded")
    t0 = time.perf_counter()
    scorer = bertscore.load_scorer(spec, "cpu", args.batch_size)
    load_s = time.perf_counter() - t0

    todo = [i for i in range(len(refs)) if refs[i].strip() and cands[i].strip()]
    texts = sorted({t for i in todo for t in (refs[i], cands[i])})
    length = {t: len(sent_encode(scorer._tokenizer, t)) for t in texts}
    result = {
        "pairs": len(refs), "scored_pairs": len(todo), "distinct_texts": len(texts),
        "tokens": sum(length.values()), "batch_size": args.batch_size,
        "computed_tokens_sorted_by_tokens": padded_tokens(texts, length, args.batch_size,
                                                          lambda t: (-length[t], t)),
        "computed_tokens_sorted_by_words": padded_tokens(texts, length, args.batch_size,
                                                         lambda t: -len(t.split(" "))),
        "scorer_load_s": round(load_s, 2),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(), "load_before": _load(),
    }
    t0 = time.perf_counter()
    P, R, F, h = bertscore.bert_score(cands, refs, spec, device="cpu", batch_size=args.batch_size)
    secs = time.perf_counter() - t0
    result.update(seconds=round(secs, 2), pairs_per_s=round(len(refs) / secs, 2),
                  tokens_per_s=round(result["tokens"] / secs, 1), load_after=_load(), hash=h,
                  mean_f1_base=round(sum(F[:len(frame)]) / len(frame), 5),
                  mean_f1_fine_tuned=round(sum(F[len(frame):]) / len(frame), 5))
    if args.old:
        # the earlier path: pairs in input order (base and fine-tuned letter of a row side by side),
        # BERTScorer.score over chunks of 4 batches, which orders each chunk's texts by word count
        order = sorted(todo, key=lambda i: (i % len(frame), i))
        chunk = args.batch_size * 4
        t0 = time.perf_counter()
        old_f = {}
        for s in range(0, len(order), chunk):
            idx = order[s:s + chunk]
            _, _, f = scorer.score([cands[i] for i in idx], [refs[i] for i in idx], batch_size=args.batch_size)
            old_f.update({i: float(v) for i, v in zip(idx, f)})
        old_s = time.perf_counter() - t0
        result.update(old_seconds=round(old_s, 2), old_load_after=_load(),
                      max_f1_difference=max(abs(old_f[i] - F[i]) for i in todo))
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
