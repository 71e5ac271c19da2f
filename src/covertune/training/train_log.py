"""The train stage's log: ``train_log.jsonl`` (one JSON line per Trainer log event, with the training
speed) and the loss plot ``loss.png``."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from covertune.core import io

log = logging.getLogger("covertune.stages.train")  # the train stage's log lines

class JsonlLogger(TrainerCallback):
    """Appends every log event to train_log.jsonl as it happens (flushed), with the training speed:
    non-padding tokens per second of optimizer steps (evaluation and saving excluded)."""

    def __init__(self, path: Path, log_lines: bool = False):
        self.path = Path(path)
        self.log_lines = log_lines  # also one log line per event (where no progress bar shows them)
        self.tokens = 0  # this session's non-padding tokens
        self.seconds = 0.0  # this session's time inside optimizer steps
        self._mark = (0, 0.0)  # (tokens, seconds) at the previous training log
        self._t0 = None
        self._tok0 = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._tok0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self.tokens += state.num_input_tokens_seen - self._tok0
            self._t0 = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:  # several processes: the main one writes the log
            return
        row = {"step": state.global_step, "epoch": state.epoch, **(logs or {}),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if "loss" in row:
            dt, dtok = self.seconds - self._mark[1], self.tokens - self._mark[0]
            row["tokens_per_s"] = round(dtok / dt, 1) if dt > 0 else None
            row["interval_tokens"], row["interval_seconds"] = dtok, round(dt, 4)
            self._mark = (self.tokens, self.seconds)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
            f.flush()
        if self.log_lines:
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (logs or {}).items()
                     if k in ("loss", "eval_loss", "learning_rate", "grad_norm", "train_runtime")}
            if "tokens_per_s" in row:
                shown["tokens_per_s"] = row["tokens_per_s"]
            log.info("step %d/%d (epoch %.2f): %s", state.global_step, state.max_steps, state.epoch or 0,
                     ", ".join(f"{k} {v}" for k, v in shown.items()))


def trim_log(path: Path, step: int) -> None:
    """Keep only the log lines of steps up to ``step`` (a resumed run logs the later ones again)."""
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by the interruption
        if row.get("step", 0) <= step:
            rows.append(row)
    io.write_jsonl(path, rows)


def plot_loss(history: list[dict], path: Path, checkpoints: list[dict] | None = None,
              chosen_step: int | None = None) -> None:
    """The training and validation loss by step; with checkpoints scored on the task
    (covertune.training.checkpoint_choice.curve), a second panel: validation ROUGE-L and unsupported numbers and
    organisations per letter at each checkpoint, the one chosen as the adapter marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    scored = [c for c in checkpoints or [] if c.get("rougeL_f") is not None]
    if scored:
        fig, (ax, task) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
        _plot_task(task, scored, chosen_step)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("" if scored else "optimizer step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("covertune train")
    ax.grid(alpha=0.3)
    ax.legend()
    io.save_figure(path, fig)


def _plot_task(ax, scored: list[dict], chosen_step: int | None) -> None:
    steps = [c["step"] for c in scored]
    ax.plot(steps, [c["rougeL_f"] for c in scored], "o-", color="tab:green", label="validation ROUGE-L F1")
    ax.set_ylabel("ROUGE-L F1")
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    facts = ax.twinx()
    facts.plot(steps, [(c.get("unsupported_numbers") or 0) + (c.get("unsupported_orgs") or 0) for c in scored],
               "s--", color="tab:red", label="unsupported numbers + organisations per letter")
    facts.set_ylabel("unsupported facts per letter")
    facts.set_ylim(bottom=0, top=max(0.05, facts.get_ylim()[1]))
    if chosen_step in steps:
        ax.axvline(chosen_step, color="gray", linestyle=":", label=f"chosen: step {chosen_step}")
    lines = ax.get_legend_handles_labels()
    more = facts.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="best")
