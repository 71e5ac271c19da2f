"""Which checkpoint of a training run becomes its adapter: chosen by the task, not only by the loss.

With ``--select-checkpoint rouge_l`` or ``task``, every checkpoint the Trainer saves (each epoch, or every
``save_steps``) writes the validation split's letters (the first ``task_eval_rows``; all by default) and
scores them. The letters are written as ``covertune generate`` writes them for that checkpoint: the
checkpoint is loaded by generate's own loader (``covertune.models.letter_model.load_letter_model``, so an NF4 adapter
runs on its dequantized training base, merged) and decoded greedily by generate's batch function
(``generate_letters``), in batches of ``task_eval_batch_size``; ``covertune generate --adapter
<out>/checkpoints/checkpoint-<step> --split validation --models fine_tuned --limit N --batch-size B`` writes
the same letters. They are scored by the evaluate stage's per-letter scores (``letter_scores``: ROUGE-L F1,
repetition, grounding) and summarised as means per letter.

Each checkpoint's record (step, epoch, validation loss, the task scores, the settings they were written
with, the hash of the adapter weights scored) goes to ``<out>/checkpoints/covertune_checkpoints.json`` and,
as a ``task_eval`` line, to ``train_log.jsonl``. A continued run does not score a checkpoint again whose
record matches the current settings and weights; a record made with other settings is scored again when its
checkpoint is still there, and dropped when it is not.

The criteria (``choose``):

- ``last``: the final step (nothing is scored).
- ``loss``: the lowest validation loss.
- ``rouge_l``: the highest mean ROUGE-L F1.
- ``task``: the highest mean ROUGE-L F1 among the checkpoints whose unsupported facts per letter (numbers
  plus organisations, covertune.metrics.grounding) are at most the fewest of any checkpoint plus
  ``task_grounding_margin``: a checkpoint that writes closer letters but invents more facts is not chosen.

Ties go to fewer unsupported facts, then to the earlier checkpoint (less training). Only checkpoints still on
disk can be chosen: the one chosen so far is kept from the Trainer's rotation (``save_total_limit``); a
criterion that turns back to a checkpoint already rotated away takes the best one left, saying so.
``early_stopping_patience`` N stops training once the chosen checkpoint is N checkpoints old. Scoring runs in
its own copy of the model with the random number generators saved and restored around it, so the training
itself is the same with and without it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from covertune.config.stages import GenerateConfig, TrainConfig
from covertune.core import distributed, io, rundir
from covertune.core.progress import is_terminal
from covertune.core.prompt import render_prompt, try_parse_prompt
from covertune.core.records import TARGET_FIELD
from covertune.generation.decoding import Decoding
from covertune.generation.letters import generate_letters
from covertune.metrics.evaluate import letter_scores
from covertune.metrics.summary import is_nan
from covertune.models.letter_model import free_model, load_letter_model

log = logging.getLogger("covertune.stages.train")

RECORDS_FILE = "covertune_checkpoints.json"  # beside the checkpoint-<step> folders
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_WEIGHTS, rundir.ADAPTER_CONFIG)
SCORED = ("rouge_l", "task")  # the criteria that write and score letters
# the options that only say how a checkpoint is chosen: not the checkpoints' identity
OPTIONS = ("select_checkpoint", "task_eval_rows", "task_eval_max_new_tokens", "task_eval_batch_size",
           "task_grounding_margin", "early_stopping_patience")
# means per letter kept for each checkpoint (covertune.metrics.evaluate.letter_scores' columns)
MEANS = ("rougeL_f", "repetition_ratio", "unsupported_numbers", "unsupported_orgs", "name_mentioned",
         "company_mentioned", "job_title_mentioned", "skills_coverage", "length_chars", "empty_output")


def scores_letters(cfg: TrainConfig) -> bool:
    return cfg.select_checkpoint in SCORED


def fingerprint_options(cfg: TrainConfig) -> dict:
    """The selection options that change which adapter a run ends with (those without effect left out, so
    that a run made before these options existed keeps its fingerprint)."""
    if cfg.select_checkpoint == "last":
        return {}
    keep = ["select_checkpoint", "early_stopping_patience"]
    if scores_letters(cfg):
        keep += ["task_eval_rows", "task_eval_max_new_tokens", "task_eval_batch_size"]
    if cfg.select_checkpoint == "task":
        keep.append("task_grounding_margin")
    return {k: getattr(cfg, k) for k in keep}


# ---------------------------------------------------------------- scoring one checkpoint's letters


def eval_rows(out: Path, cfg: TrainConfig) -> list[dict]:
    rows = rundir.read_split(out, "validation")
    if not rows:
        raise ValueError(f"select_checkpoint {cfg.select_checkpoint} scores validation letters, but "
                         f"{rundir.split_path(out, 'validation')} has no rows: give the data stage a --val-size")
    return rows[:cfg.task_eval_rows] if cfg.task_eval_rows else rows


def settings_key(out: Path, cfg: TrainConfig) -> dict:
    """What a checkpoint's scores depend on besides its weights."""
    return {"rows": cfg.task_eval_rows, "max_new_tokens": cfg.task_eval_max_new_tokens,
            "batch_size": cfg.task_eval_batch_size, "model": cfg.model, "prompt_format": cfg.prompt_format,
            "validation": rundir.path_hash(rundir.split_path(out, "validation"))}


def adapter_hash(ckpt: Path) -> str | None:
    return rundir.path_hash(ckpt / ADAPTER_WEIGHTS)


def summarise_scores(letters: list[str], records: list[dict]) -> dict:
    """Means per letter of the evaluate stage's scores of ``letters`` against ``records`` (each letter's
    reference and inputs as ``covertune generate`` and ``covertune evaluate`` take them)."""

    rows = []
    for letter, r in zip(letters, records):
        reference = str(r.get("cover_letter_raw") or r.get(TARGET_FIELD) or "").strip()
        rows.append(letter_scores(letter, reference, try_parse_prompt(render_prompt(r))))
    out = {"letters": len(rows)}
    for k in MEANS:
        values = [float(row[k]) for row in rows if not is_nan(row[k])]
        out[k] = sum(values) / len(values) if values else None
    out["unsupported_facts"] = (out["unsupported_numbers"] or 0.0) + (out["unsupported_orgs"] or 0.0)
    return out


@contextlib.contextmanager
def kept_random_state():
    """Python's, numpy's and torch's (CPU and every CUDA device's) random states as they were on entry."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def write_checkpoint_info(ckpt: Path, info: dict) -> None:
    """The train stage's config beside a checkpoint's adapter, as beside <out>/adapter: what generate reads
    to load it (prompt format, base quantization)."""
    io.write_json(ckpt / rundir.TRAIN_INFO, {**info, "checkpoint": ckpt.name})


def score_checkpoint(ckpt: Path, cfg: TrainConfig, records: list[dict]) -> dict:
    """Write the validation letters of ``ckpt`` as ``covertune generate`` would and score them."""

    with kept_random_state():
        lm = load_letter_model(GenerateConfig(model=cfg.model, out="", adapter=str(ckpt),
                                              trust_remote_code=cfg.trust_remote_code))
        inputs = [lm.prompt_ids(r) for r in records]
        letters = generate_letters(lm.model, lm.tokenizer, inputs, cfg.task_eval_batch_size,
                                   Decoding(max_new_tokens=cfg.task_eval_max_new_tokens),
                                   progress=is_terminal(), desc=f"validation letters, {ckpt.name}")
        free_model(lm.model)
        lm = None
        gc.collect()
    return summarise_scores(letters, records)


# ---------------------------------------------------------------- the records and the choice


def read_records(ckpt_dir: Path) -> list[dict]:
    path = ckpt_dir / RECORDS_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s cannot be read; its checkpoints are scored again where they still exist", path)
        return []
    return [r for r in data.get("checkpoints", []) if isinstance(r, dict) and "step" in r]


def write_records(ckpt_dir: Path, records: list[dict]) -> None:
    io.write_json(ckpt_dir / RECORDS_FILE, {"checkpoints": sorted(records, key=lambda r: r["step"])})


def _facts(r: dict) -> float:
    return r["task"]["unsupported_facts"]


def choose(records: list[dict], criterion: str, margin: float = 0.0,
           available: set[int] | None = None) -> tuple[dict | None, str]:
    """The chosen record among ``records`` (those at steps in ``available``, when given) by ``criterion``,
    and why, in words."""
    pool = [r for r in records if available is None or r["step"] in available]
    if criterion == "last":
        pool = sorted(pool, key=lambda r: r["step"])
        return (pool[-1], "last: the final checkpoint") if pool else (None, "no checkpoint")
    if criterion == "loss":
        pool = [r for r in pool if r.get("eval_loss") is not None and not is_nan(r["eval_loss"])]
        if not pool:
            return None, "no checkpoint has a validation loss"
        best = min(pool, key=lambda r: (r["eval_loss"], r["step"]))
        return best, f"loss: the lowest validation loss, {best['eval_loss']:.4f}"
    pool = [r for r in pool if r.get("task") and r["task"].get("rougeL_f") is not None]
    if not pool:
        return None, "no checkpoint has validation scores"
    if criterion == "rouge_l":
        best = max(pool, key=lambda r: (r["task"]["rougeL_f"], -_facts(r), -r["step"]))
        return best, f"rouge_l: the highest validation ROUGE-L F1, {best['task']['rougeL_f']:.4f}"
    if criterion != "task":
        raise ValueError(f"unknown checkpoint criterion {criterion!r}")
    # the bar is set by every checkpoint scored, also those no longer on disk
    fewest = min(_facts(r) for r in records if r.get("task") and r["task"].get("rougeL_f") is not None)
    eligible = [r for r in pool if _facts(r) <= fewest + margin + 1e-12]
    if not eligible:  # the grounded ones were rotated away: the least-inventive one left
        eligible = [min(pool, key=lambda r: (_facts(r), r["step"]))]
    best = max(eligible, key=lambda r: (r["task"]["rougeL_f"], -_facts(r), -r["step"]))
    where = " on disk" if available is not None else ""
    return best, (f"task: the highest validation ROUGE-L F1 ({best['task']['rougeL_f']:.4f}) among the "
                  f"{len(eligible)} checkpoint(s){where} whose unsupported numbers and organisations per letter "
                  f"({_facts(best):.4f}) are within {margin:g} of the fewest ({fewest:.4f})")


def choices_by_criterion(records: list[dict], margin: float) -> dict:
    """The step each criterion would choose among every record (for the run's record)."""
    out = {}
    for criterion in ("last", "loss", "rouge_l", "task"):
        best, _ = choose(records, criterion, margin)
        out[criterion] = best["step"] if best else None
    return out


def on_disk(ckpt_dir: Path) -> set[int]:
    return {int(p.name.split("-")[-1]) for p in rundir.checkpoints(ckpt_dir)}


def stale_task_lines(log_path: Path, key: dict) -> None:
    """Drop the train log's task_eval lines written with other settings than ``key``."""
    if not log_path.exists():
        return
    rows = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "task_eval" in row and row.get("task_eval_settings") != key:
            continue
        rows.append(row)
    io.write_jsonl(log_path, rows)


class CheckpointChooser(TrainerCallback):
    """After every checkpoint the Trainer saves: its record (validation loss; with rouge_l/task its letters
    scored), the chosen checkpoint kept from rotation, early stopping."""

    def __init__(self, cfg: TrainConfig, out: Path, info: dict):
        self.cfg, self.out, self.info = cfg, Path(out), info
        self.ckpt_dir = rundir.checkpoints_dir(out)
        self.log_path = rundir.train_log(out)
        self.scored = scores_letters(cfg)
        self.key = settings_key(self.out, cfg) if self.scored else None
        self.rows = eval_rows(self.out, cfg) if self.scored else []
        self.records: list[dict] = []
        self.stopped_early_at: int | None = None

    # ---- continuing a run: keep what is still valid, score what is not
    def reconcile(self, resume_step: int | None) -> None:
        """The records of an earlier session of this run, up to ``resume_step`` (later steps are trained
        again); checkpoints on disk without a valid record are scored now."""
        if resume_step is None:
            self.records = []
            write_records(self.ckpt_dir, self.records)
            return
        kept = [r for r in read_records(self.ckpt_dir) if r["step"] <= resume_step]
        present = {int(p.name.split("-")[-1]): p for p in rundir.checkpoints(self.ckpt_dir)}
        by_step = {r["step"]: r for r in kept}
        if self.scored:
            stale_task_lines(self.log_path, self.key)
            for step, r in list(by_step.items()):
                if not self._valid(r, present.get(step)) and step not in present:
                    (log.warning if r.get("task") else log.info)(
                        "checkpoint-%d has no validation scores made with these settings and the checkpoint is "
                        "gone: it is left out of the choice", step)
                    r.pop("task", None)
        for step, path in sorted(present.items()):
            if step > resume_step:
                continue
            r = by_step.get(step)
            if r is None:
                r = by_step[step] = self._record(path, step, _epoch_of(path), _eval_loss_at(path, step))
            if self.scored and not self._valid(r, path):
                log.info("scoring %s (its validation scores are missing or were made with other settings)",
                         path.name)
                self._score(path, r)
            elif self.scored:
                log.info("%s: validation scores kept from the earlier session", path.name)
        self.records = sorted(by_step.values(), key=lambda r: r["step"])
        write_records(self.ckpt_dir, self.records)

    def _valid(self, r: dict, path: Path | None) -> bool:
        if not r.get("task") or r.get("task_eval_settings") != self.key:
            return False
        return path is None or r.get("adapter_sha") == adapter_hash(path)

    def _record(self, path: Path, step: int, epoch, eval_loss) -> dict:
        return {"step": step, "epoch": epoch, "checkpoint": path.name, "eval_loss": eval_loss}

    def _score(self, path: Path, record: dict) -> None:
        write_checkpoint_info(path, self.info)
        t0 = time.perf_counter()
        scores = score_checkpoint(path, self.cfg, self.rows)
        scores["seconds"] = round(time.perf_counter() - t0, 2)
        record.update(task=scores, task_eval_settings=self.key, adapter_sha=adapter_hash(path))
        log.info("%s: validation ROUGE-L %.4f, repetition %.4f, unsupported numbers %.4f and organisations "
                 "%.4f per letter (%d letters, %.1f s)", path.name, scores["rougeL_f"], scores["repetition_ratio"],
                 scores["unsupported_numbers"] or 0, scores["unsupported_orgs"] or 0, scores["letters"],
                 scores["seconds"])
        line = {"step": record["step"], "epoch": record["epoch"], "checkpoint": path.name, "task_eval": scores,
                "task_eval_settings": self.key, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, default=str) + "\n")

    # ---- Trainer events
    def on_train_begin(self, args, state, control, **kwargs):
        self._protect(state)

    def on_save(self, args, state, control, **kwargs):
        step = state.global_step
        path = self.ckpt_dir / f"checkpoint-{step}"
        write_checkpoint_info(path, self.info)
        record = self._record(path, step, state.epoch, _eval_loss(state.log_history, step))
        if self.scored:
            self._score(path, record)
        self.records = [r for r in self.records if r["step"] != step] + [record]
        self.records.sort(key=lambda r: r["step"])
        write_records(self.ckpt_dir, self.records)
        best = self._protect(state)
        patience = self.cfg.early_stopping_patience
        if patience and best is not None:
            since = sum(r["step"] > best["step"] for r in self.records)
            if since >= patience:
                log.info("early stopping at step %d: the chosen checkpoint (step %d) is %d checkpoint(s) old "
                         "(patience %d)", step, best["step"], since, patience)
                self.stopped_early_at = step
                control.should_training_stop = True
        return control

    def _protect(self, state) -> dict | None:
        """Mark the chosen checkpoint as the Trainer's best, which its rotation keeps (with last, the
        Trainer's own rotation is left as it is)."""
        if self.cfg.select_checkpoint == "last":
            return None
        best, _ = choose(self.records, self.cfg.select_checkpoint, self.cfg.task_grounding_margin,
                         on_disk(self.ckpt_dir))
        if best is not None:
            state.best_model_checkpoint = str(self.ckpt_dir / f"checkpoint-{best['step']}")
            state.best_global_step = best["step"]
        return best

    # ---- the end: the chosen checkpoint and the run's record of it
    def final_choice(self, final_step: int) -> tuple[Path | None, dict]:
        """(the chosen checkpoint's folder, or None for the final weights in memory; the run's record)."""
        margin = self.cfg.task_grounding_margin
        if self.cfg.select_checkpoint == "last":
            return None, {"criterion": "last", "reason": "last: the final step", "step": final_step,
                          "final_step": final_step, "stopped_early_at": None,
                          "by_criterion": choices_by_criterion(self.records, margin), "checkpoints": self.records}
        best, reason = choose(self.records, self.cfg.select_checkpoint, margin, on_disk(self.ckpt_dir))
        ideal, _ = choose(self.records, self.cfg.select_checkpoint, margin)
        if best is not None and ideal is not None and ideal["step"] != best["step"]:
            reason += (f"; checkpoint-{ideal['step']}, which the criterion prefers, was removed by the rotation "
                       "(raise --save-total-limit to keep it)")
        record = {"criterion": self.cfg.select_checkpoint, "reason": reason,
                  "step": best["step"] if best else final_step, "epoch": best["epoch"] if best else None,
                  "eval_loss": best.get("eval_loss") if best else None,
                  "task": best.get("task") if best else None, "final_step": final_step,
                  "stopped_early_at": self.stopped_early_at,
                  "by_criterion": choices_by_criterion(self.records, margin),
                  "checkpoints": self.records}
        if best is None:
            log.warning("no checkpoint could be chosen by %s (%s): the adapter is the final step's",
                        self.cfg.select_checkpoint, reason)
            record["reason"] = f"{reason}: the final step's weights"
            return None, record
        if best["step"] == final_step:
            return None, record
        return self.ckpt_dir / f"checkpoint-{best['step']}", record


class SharedChoice(TrainerCallback):
    """A CheckpointChooser's events in one process or several: the main process records, scores and
    chooses (it alone writes the records); then every process takes its choice (the checkpoint kept from
    rotation, whether to stop early), so that all of them stop at the same step."""

    def __init__(self, chooser: CheckpointChooser):
        self.chooser = chooser

    def on_train_begin(self, args, state, control, **kwargs):
        return self._shared(state, control, lambda: self.chooser.on_train_begin(args, state, control, **kwargs))

    def on_save(self, args, state, control, **kwargs):
        return self._shared(state, control, lambda: self.chooser.on_save(args, state, control, **kwargs))

    @staticmethod
    def _shared(state, control, event):
        if distributed.is_main():
            event()
        choice = distributed.broadcast((state.best_model_checkpoint, state.best_global_step,
                                        control.should_training_stop))
        state.best_model_checkpoint, state.best_global_step, control.should_training_stop = choice
        return control


def _eval_loss(history: list[dict], step: int) -> float | None:
    found = [h["eval_loss"] for h in history if h.get("step") == step and "eval_loss" in h]
    return found[-1] if found else None


def _epoch_of(path: Path):
    try:
        return json.loads((path / "trainer_state.json").read_text(encoding="utf-8")).get("epoch")
    except (OSError, ValueError):
        return None


def _eval_loss_at(path: Path, step: int) -> float | None:
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _eval_loss(state.get("log_history", []), step)


def copy_adapter(ckpt: Path, dest: Path) -> None:
    """The chosen checkpoint's adapter weights and config into ``dest`` (the adapter folder being written)."""
    import shutil

    for name in ADAPTER_FILES:
        shutil.copy2(ckpt / name, dest / name)


def curve(records: list[dict]) -> list[dict]:
    """Per checkpoint: step, epoch, validation loss and the task scores (for the plot and the model card)."""
    return [{"step": r["step"], "epoch": r.get("epoch"), "eval_loss": r.get("eval_loss"),
             **({k: r["task"].get(k) for k in ("rougeL_f", "repetition_ratio", "unsupported_numbers",
                                                "unsupported_orgs")} if r.get("task") else {})}
            for r in records]
