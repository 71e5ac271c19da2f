#!/usr/bin/env python
"""Side-by-side markdown tables from several evaluate outputs (eval_summary.csv), one per subset; the
metrics, their labels and decimals come from covertune.metrics.summary.METRICS (↓: lower is better).

    python scripts/results_table.py "7B reference=docs/results/reference" "SmolLM2-135M=docs/results/smol"
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from covertune.metrics.summary import METRICS


def main(args: list[str]) -> None:
    runs = [(label, Path(path)) for label, _, path in (a.partition("=") for a in args)]
    frames = []
    for label, path in runs:
        f = pd.read_csv(path / "eval_summary.csv")
        f["run"] = label
        frames.append(f)
    data = pd.concat(frames)
    hashes = sorted(data["bertscore_hash"].dropna().unique())
    print(f"BERTScore scorer: `{'`, `'.join(hashes)}`\n")
    for subset in ("full", "fair", "strict"):
        part = data[data["subset"] == subset]
        cols = [(label, model) for label, _ in runs for model in ("base", "fine_tuned")]
        ns = {c: part[(part.run == c[0]) & (part.model == c[1])]["n"].max() for c in cols}
        print(f"**{subset}**\n")
        print("| metric | " + " | ".join(f"{r} {m.replace('_', '-')} (n={ns[(r, m)]})" for r, m in cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for key, metric in METRICS.items():
            if key not in set(part.metric):
                continue
            cells = []
            for r, m in cols:
                row = part[(part.run == r) & (part.model == m) & (part.metric == key)]
                cells.append(metric.format(row["mean"].iloc[0]) if len(row) else "")
            arrow = " ↓" if metric.higher_is_better is False else ""
            print(f"| {metric.label}{arrow} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
