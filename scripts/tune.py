#!/usr/bin/env python
"""Choose a training recipe on the validation split only, then score the test split once.

Each variant of a grid (YAML) is trained into its own run directory under --root, generates letters
for the validation split, and is scored there (ROUGE-L F1, repetition ratio). The best variant by
validation ROUGE-L (optionally among those within a repetition bound) is written to <root>/best.yaml; with
--final it then generates base and fine-tuned letters for the test split into <root>/<best>/eval.csv.
The test split plays no part in the choice. Finished variants are kept in <root>/tuning.csv and are
not run again, so an interrupted sweep resumes.

    python scripts/tune.py --preset smol --data ../shared/data/cover-letter-dataset \
        --grid configs/smol_grid.yaml --root runs/tune --final
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import time
from pathlib import Path

import pandas as pd
import yaml

from covertune import io
from covertune.config import build, load_preset, load_yaml
from covertune.data.stage import run_data
from covertune.generate import generate
from covertune.metrics.repetition import repetition_ratio
from covertune.metrics.rouge import rouge_l_many
from covertune.train import train

log = logging.getLogger("tune")


def score(csv: Path, column: str) -> dict:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    rouge = rouge_l_many(frame["ground_truth"].tolist(), frame[column].tolist())
    reps = [repetition_ratio(t) for t in frame[column]]
    return {"val_rougeL": statistics.mean(rouge), "val_repetition": statistics.mean(reps),
            "val_chars": statistics.mean(len(t) for t in frame[column]), "val_rows": len(frame)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smol")
    ap.add_argument("--config", help="YAML layered over the preset")
    ap.add_argument("--data", required=True)
    ap.add_argument("--grid", required=True, help="YAML: {variants: [{name, train: {...}, generate: {...}, reuse: name}]}")
    ap.add_argument("--root", default="runs/tune")
    ap.add_argument("--only", nargs="*", help="run only these variants")
    ap.add_argument("--max-repetition", type=float, default=None,
                    help="only variants at or under this validation repetition ratio can be chosen")
    ap.add_argument("--final", action="store_true", help="generate the test split with the best variant")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    root = Path(args.root)
    base_layers = [load_preset(args.preset)] + ([load_yaml(args.config)] if args.config else [])
    base_layers.append({"data": args.data, "out": str(root / "_data")})
    run_data(build("data", *base_layers))
    variants = yaml.safe_load(Path(args.grid).read_text())["variants"]
    table_path = root / "tuning.csv"
    table = pd.read_csv(table_path) if table_path.exists() else pd.DataFrame()
    done = set(table["name"]) if len(table) else set()

    def run_dir(name: str) -> Path:
        path = root / name
        if not (path / "data").exists():
            path.mkdir(parents=True, exist_ok=True)
            shutil.copytree(root / "_data" / "data", path / "data")
        return path

    rows = table.to_dict("records") if len(table) else []
    for v in variants:
        name = v["name"]
        if name in done or (args.only and name not in args.only):
            continue
        out = run_dir(v.get("reuse", name))
        layers = base_layers + [{"out": str(out)}, {"train": v.get("train", {}), "generate": v.get("generate", {})}]
        t0 = time.time()
        train(build("train", *layers))
        t_train = time.time() - t0
        gen = build("generate", *layers, {"generate": {"split": "validation", "models": ["fine_tuned"],
                                                        "output_file": f"val_{name}.csv", "force": True}})
        t1 = time.time()
        generate(gen)
        row = {"name": name, **score(out / gen.output_file, "fine_tuned_output"),
               "train_s": round(t_train, 1), "generate_s": round(time.time() - t1, 1),
               "train": yaml.safe_dump(v.get("train", {}), default_flow_style=True).strip(),
               "generate": yaml.safe_dump(v.get("generate", {}), default_flow_style=True).strip()}
        try:
            log_rows = io.read_jsonl(out / "train_log.jsonl")
            evals = [r["eval_loss"] for r in log_rows if "eval_loss" in r]
            row["val_loss_last"], row["val_loss_min"] = evals[-1], min(evals)
        except (FileNotFoundError, IndexError, ValueError):
            pass
        log.info("%s: %s", name, row)
        rows.append(row)
        io.write_csv(table_path, pd.DataFrame(rows))

    table = pd.DataFrame(rows)
    ok = table if args.max_repetition is None else table[table["val_repetition"] <= args.max_repetition]
    best = (ok if len(ok) else table).sort_values("val_rougeL", ascending=False).iloc[0]
    chosen = next(v for v in variants if v["name"] == best["name"])
    io.write_text(root / "best.yaml", yaml.safe_dump({"chosen_on": "validation", **chosen}, sort_keys=False))
    log.info("best on validation: %s (ROUGE-L %.4f, repetition %.4f)", best["name"], best["val_rougeL"], best["val_repetition"])
    if args.final:
        out = run_dir(chosen.get("reuse", chosen["name"]))
        layers = base_layers + [{"out": str(out)}, {"generate": chosen.get("generate", {})}]
        print(generate(build("generate", *layers, {"generate": {"split": "test", "models": ["base", "fine_tuned"]}})))


if __name__ == "__main__":
    main()
