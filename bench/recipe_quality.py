#!/usr/bin/env python
"""Does a fast training recipe cost quality? Validation loss on the embedded model, recipe against recipe.

Trains the embedded model (SmolLM2-135M-Instruct) on the real train split with each recipe of
bench/train_7b.py (``name`` or ``name:field=value,...``) and each seed, through covertune's train
stage, several runs at a time on one GPU (their speed is not measured here), each saving a checkpoint
per epoch. Every checkpoint is then scored by one yardstick, whatever its recipe trained on: the mean
cross-entropy per letter token of the validation letters (prompt masked), on a bf16 base plus the
adapter: the original base, and the base quantized as in training then dequantized (what merge and
generate use by default for a 4-bit adapter, ``--base-weights``). Runs still training at
``--deadline`` are stopped and scored on the epochs they finished.

    python bench/recipe_quality.py --data <dataset folder> --work /tmp/q --seeds 1 2 \\
        --recipes reference covertune --deadline 420 --json quality.json
    python bench/recipe_quality.py --work /tmp/q ... --resume     # next call: the stopped runs go on
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from train_7b import copy_splits, recipe_config  # noqa: E402

QUALITY = dict(model="embedded", epochs=4, max_steps=-1, warmup_ratio=0.03, eval_strategy="epoch",
               save_strategy="epoch", save_total_limit=8, logging_steps=10)


def parse_spec(spec: str) -> tuple[str, dict]:
    """'covertune:learning_rate=4e-4,batch_size=8' -> ('covertune', {...}): each value read as YAML and
    coerced to its TrainConfig field's type as a config file's would be (padding_free=off is 'off')."""
    import yaml

    from covertune.config.stages import TrainConfig
    from covertune.config.build import coerce, field_types

    kinds = field_types(TrainConfig)
    name, _, rest = spec.partition(":")
    fields = {}
    for item in filter(None, rest.split(",")):
        key, _, value = (s.strip() for s in item.partition("="))
        if key not in kinds:
            raise ValueError(f"recipe {name!r}: {key!r} is not a train option")
        fields[key] = coerce(key, yaml.safe_load(value), kinds[key])
    return name, fields


def validation_letters(run: Path):
    """The embedded tokenizer and the run's validation split encoded with the loss on the letter only."""
    from covertune.models import load as models
    from covertune.training.sft_data import encode_records
    from covertune.core.rundir import read_split

    tok = models.load_tokenizer(QUALITY["model"])
    return tok, encode_records(read_split(run, "validation"), tok, 768, "raw", "letter", "validation")


def letter_val_loss(letters, adapter: Path, quantization: str = "none", base_weights: str = "original",
                    batch_size: int = 16) -> float:
    """Mean cross-entropy per validation letter token (and EOS), prompt masked, on the bf16 base plus
    the adapter: the original base, or (``base_weights`` 'trained') the base quantized as in training
    and dequantized, as merge and generate build it; ``letters`` from ``validation_letters``."""
    import torch
    from peft import PeftModel

    from covertune.models import load as models
    from covertune.training.sft_data import IGNORE_INDEX, PadCollator

    tok, enc = letters
    model = models.load_adapter_base(QUALITY["model"], quantization, base_weights, "bf16", tokenizer=tok)
    model = PeftModel.from_pretrained(model, str(adapter)).eval()
    collate = PadCollator(tok.pad_token_id)
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(enc.examples), batch_size):
            batch = {k: v.to(model.device) for k, v in collate(enc.examples[i:i + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels,
                                                     ignore_index=IGNORE_INDEX, reduction="sum")
            total += loss.item()
            count += int((labels != IGNORE_INDEX).sum())
    return round(total / count, 5)


def run_dir(work: Path, spec: str, seed: int) -> Path:
    return work / f"{spec.replace(':', '_').replace(',', '_').replace('=', '-')}_s{seed}"


def child_train(spec: str, seed: int, work: Path, resume: bool = False) -> None:
    """Train one run; with ``resume``, continue it from its last checkpoint (a finished run is left be)."""
    from covertune.core.rundir import last_checkpoint
    from covertune.stages.train import train

    name, fields = parse_spec(spec)
    out = run_dir(work, spec, seed)
    if resume and (out / "train_wall_s.txt").exists():
        return
    resume = resume and last_checkpoint(out / "checkpoints") is not None
    if not resume:
        copy_splits(work, out)
    cfg = recipe_config(name, **{**QUALITY, **fields, "seed": seed, "out": str(out), "force": not resume,
                                 "resume": resume})
    t0 = time.perf_counter()
    print(train(cfg), flush=True)
    # the wall time of the last (or only) training session of this run
    (out / "train_wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}{' (resumed)' if resume else ''}")


def child_score(spec: str, seed: int, work: Path, result: Path) -> None:
    """Both yardsticks on every epoch checkpoint of one run."""
    from covertune.models import load as models

    name, fields = parse_spec(spec)
    out = run_dir(work, spec, seed)
    cfg = recipe_config(name, **{**QUALITY, **fields})
    letters = validation_letters(out)
    # an unquantized base is its own trained base: score it once
    trained_is_original = models.resolve_base_weights("trained", cfg.quantization) == "original"
    epochs = []
    for ckpt in sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        state = ckpt / "trainer_state.json"
        if not (ckpt / "adapter_model.safetensors").exists() or not state.exists():
            continue
        st = json.loads(state.read_text())
        evals = [h["eval_loss"] for h in st["log_history"] if "eval_loss" in h]
        on_original = letter_val_loss(letters, ckpt)
        on_trained = (on_original if trained_is_original
                      else letter_val_loss(letters, ckpt, cfg.quantization, "trained"))
        epochs.append({"epoch": round(st["epoch"], 2), "step": st["global_step"],
                       "stage_eval_loss": evals[-1] if evals else None,
                       "letter_val_loss": on_original, "letter_val_loss_trained_base": on_trained})
    wall = out / "train_wall_s.txt"
    result.write_text(json.dumps({"recipe": spec, "seed": seed, "finished": wall.exists(),
                                  "train_wall_s": wall.read_text() if wall.exists() else None,
                                  "stage_eval_loss_on": cfg.loss_on, "epochs": epochs}))


def launch(args, *child_args: str, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--work", args.work, "--json", args.json, "--model", args.model, *child_args]
    return subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT)


def summarise(runs: list[dict]) -> dict:
    """Per recipe and epoch: mean, min and max over seeds of each yardstick."""
    summary = {}
    for r in runs:
        for e in r["epochs"]:
            summary.setdefault(r["recipe"], {}).setdefault(str(e["epoch"]), []).append(e)
    for spec, per_epoch in summary.items():
        for epoch, rows in per_epoch.items():
            per_epoch[epoch] = {"seeds": len(rows), **{
                key: {"mean": round(statistics.mean(r[key] for r in rows), 4), "min": min(r[key] for r in rows),
                      "max": max(r[key] for r in rows)}
                for key in ("letter_val_loss", "letter_val_loss_trained_base")}}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset for the data stage (skipped when <work>/run/data exists)")
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default="embedded", help="the base model (the tests use a tiny local one)")
    ap.add_argument("--recipes", nargs="+", default=["reference", "covertune"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--parallel", type=int, default=6)
    ap.add_argument("--deadline", type=float, default=None, help="seconds after which training runs are stopped")
    ap.add_argument("--resume", action="store_true", help="continue stopped runs in --work from their last "
                    "checkpoint (across calls of a time-limited machine); finished runs are kept")
    ap.add_argument("--json", required=True)
    ap.add_argument("--_train", nargs=2, metavar=("SPEC", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--_score", nargs=3, metavar=("SPEC", "SEED", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    QUALITY["model"] = args.model
    if args._train:
        return child_train(args._train[0], int(args._train[1]), work, args.resume)
    if args._score:
        return child_score(args._score[0], int(args._score[1]), work, Path(args._score[2]))

    from covertune.core import io
    from covertune.config.stages import DataConfig
    from covertune.stages.data import run_data

    t0 = time.monotonic()
    if not (work / "run" / "data" / "validation.jsonl").exists():
        print(run_data(DataConfig(data=args.data, out=str(work / "run"))), flush=True)
    from covertune.models import load as models

    models.resolve_model(args.model)  # converted once here, not by every child at the same time
    jobs = [(spec, seed) for spec in args.recipes for seed in args.seeds]

    def pool(todo, make, deadline: float | None = None) -> None:
        """Run ``make(spec, seed)`` jobs, --parallel at a time; past ``deadline`` seconds, stop them all."""
        running = []
        while todo or running:
            while todo and len(running) < args.parallel:
                running.append(make(*todo.pop(0)))
            time.sleep(2)
            if deadline and time.monotonic() - t0 > deadline:
                for proc in running:
                    proc.kill()
                todo.clear()
            running = [p for p in running if p.poll() is None]

    def train_job(spec, seed):
        extra = ["--resume"] if args.resume else []
        return launch(args, *extra, "--_train", spec, str(seed),
                      log=work / f"train_{run_dir(work, spec, seed).name}.log")

    def score_job(spec, seed):
        name = run_dir(work, spec, seed).name
        return launch(args, "--_score", spec, str(seed), str(work / f"score_{name}.json"),
                      log=work / f"score_{name}.log")

    pool(list(jobs), train_job, args.deadline)
    print(f"training done or stopped after {time.monotonic() - t0:.0f} s; scoring", flush=True)
    pool(list(jobs), score_job)
    runs = [json.loads(f.read_text()) for spec, seed in jobs
            if (f := work / f"score_{run_dir(work, spec, seed).name}.json").exists()]
    summary = summarise(runs)
    io.write_json(Path(args.json), {
        "yardstick": "mean cross-entropy per validation letter token (prompt masked) on a bf16 base + adapter: "
                     "letter_val_loss on the original base, letter_val_loss_trained_base on the base quantized "
                     "as in training and dequantized (merge/generate --base-weights trained)",
        "settings": QUALITY, "deadline_s": args.deadline,
        "wall_s": round(time.monotonic() - t0, 1), "summary": summary, "runs": runs})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
