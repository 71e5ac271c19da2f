"""covertune sweep: train a grid of recipe variants, rank them on the validation split, test the winner once.

``sweep(cfg, layers)`` reads top to bottom: the grid (YAML: ``variants: [{name, train: {...}, generate: {...},
reuse: NAME}]``, each variant's options layered over the preset/--config recipe in ``layers``) -> the data
stage once (``<root>/_data``) -> per variant, in its run directory ``<root>/<name>``: train on the train
split, generate the validation letters (batched, fine-tuned only), score them with the evaluate stage
(``<root>/<name>/validation/``) -> the ranking (``rank_by`` on the full validation split; variants that agree
to ``decimals`` ordered by the tie-breakers; ``constraints`` decide who may be chosen) -> ``sweep.csv``,
``sweep.md``, ``sweep.png``, ``best.yaml`` -> with ``final``, the winner's test letters (base and
fine-tuned), evaluation and report in its run directory, once.

A variant that finished with the same settings (its marker ``<root>/<name>/.stages/sweep.json`` records
them) is not run again, so an interrupted sweep resumes, and a grid can grow. ``reuse: NAME`` makes a
decoding-only variant: NAME's adapter with other generate options. ``parallel`` runs variants in worker
processes (several on one GPU), and ``gpus`` hands each worker its own GPU through CUDA_VISIBLE_DEVICES.
The test split is read only by ``final``, after the choice.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import yaml

from covertune import registry
from covertune.config.build import build, load_yaml, to_dict
from covertune.config.stages import EvaluateConfig, GenerateConfig, SweepConfig, TrainConfig
from covertune.core import io, rundir
from covertune.metrics.summary import METRICS, is_nan

log = logging.getLogger(__name__)

STAGE = "sweep"
FINAL_FILE = "final.json"
VARIANT_KEYS = {"name", "train", "generate", "reuse", "note"}
RESERVED = {"out", "force", "resume", "split", "models", "output_file", "adapter", "merged"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_CONSTRAINT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|<|>|==)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
        "==": lambda a, b: a == b}


def sweep(cfg: SweepConfig, layers: list[dict] | None = None) -> str:
    layers = list(layers or [])
    root = Path(cfg.root)
    variants = read_grid(cfg.grid)
    criterion = Criterion.from_config(cfg)
    if cfg.parallel < 1:
        raise ValueError(f"parallel must be at least 1, got {cfg.parallel}")
    unknown = [n for n in cfg.only if n not in variants]
    if unknown:
        raise ValueError(f"--only: no variant named {', '.join(unknown)} in {cfg.grid}; variants: {', '.join(variants)}")
    base = layers + [{k: v for k, v in (("data", cfg.data), ("model", cfg.model)) if v}]

    # ---- the data stage once; every variant trains on its train split and is ranked on its validation split
    run_data = registry.stage("data").function()

    data_out = root / "_data"
    log.info("%s", run_data(build("data", *base, {"data": {"out": str(data_out)}})))
    val_rows = len(io.read_jsonl(data_out / "data" / "validation.jsonl"))
    if not val_rows:
        raise ValueError(f"{data_out / 'data' / 'validation.jsonl'} is empty: the sweep ranks variants on the "
                         "validation split; set val_size (e.g. --config with data: {val_size: 0.1})")
    data_key = {f: _file_sha(data_out / "data" / f"{f}.jsonl") for f in ("train", "validation")}

    # ---- the variants still to run: not finished with these settings (a reused adapter's variant first)
    plans = {name: plan(root, v, base, variants, data_key, cfg) for name, v in variants.items()}
    wanted = set(cfg.only or variants)
    for name in list(wanted):
        if variants[name].get("reuse"):
            wanted.add(variants[name]["reuse"])
    todo = [n for n in variants if n in wanted and (cfg.force or not finished(root / n, plans[n]["key"]))]
    skipped = [n for n in variants if n in wanted and n not in todo]
    if skipped:
        log.info("finished with the same settings, not run again: %s", ", ".join(skipped))
    failed = run_group([n for n in todo if not variants[n].get("reuse")], plans, cfg)
    failed.update(run_group([n for n in todo if variants[n].get("reuse") and variants[n]["reuse"] not in failed],
                            plans, cfg))

    # ---- rank every finished variant of the grid on validation
    rows = [r for r in (result(root / n, plans[n]["key"]) for n in variants) if r is not None]
    if not rows:
        why = "; ".join(f"{n}: {e}" for n, e in failed.items())
        raise RuntimeError(f"no variant of {cfg.grid} has finished in {root}" + (f" ({why})" if why else ""))
    table = criterion.rank(pd.DataFrame(rows))
    io.write_csv(root / "sweep.csv", table)
    io.write_text(root / "sweep.md", render_markdown(table, criterion, cfg, val_rows))
    plot(table, criterion, root / "sweep.png")
    chosen = table[table["eligible"]]
    lines = [f"sweep: {len(rows)} of {len(variants)} variant(s) ranked on {val_rows} validation rows "
             f"({criterion.describe()}) -> {root / 'sweep.md'}, {root / 'sweep.csv'}, {root / 'sweep.png'}"]
    lines.append(_md_table(table, criterion, short=True))
    if failed:  # the table of the finished ones is written; the failed ones are retried by the same command
        log.info("%s", "\n".join(lines))
        raise RuntimeError(f"{len(failed)} variant(s) failed ({'; '.join(f'{n}: {e}' for n, e in failed.items())}); "
                           "the finished ones are kept and ranked: rerun the same command to retry")
    if chosen.empty:
        (root / "best.yaml").unlink(missing_ok=True)
        lines.append(f"no variant meets the constraints ({', '.join(cfg.constraints)}): none chosen")
        if cfg.final:
            raise RuntimeError("\n".join(lines) + "; --final needs a chosen variant: loosen --constraints")
        return "\n".join(lines)
    best = chosen.iloc[0]
    winner = variants[best["variant"]]
    io.write_text(root / "best.yaml", yaml.safe_dump(
        {"chosen_on": "validation", "criterion": criterion.describe(), "variant": winner,
         "validation": {m: _num(best[f"val_{m}"]) for m in criterion.metrics()}}, sort_keys=False))
    lines.append(f"best on validation: {best['variant']} ({criterion.rank_by} {best[f'val_{criterion.rank_by}']:.4f})"
                 f" -> {root / 'best.yaml'}")
    if cfg.final:
        lines.append(final(root, best["variant"], plans[best["variant"]], base))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the grid and its plans


def read_grid(path: str) -> dict[str, dict]:
    """The variants of a grid file by name, checked: one-line errors naming the file, variant and field."""
    if not path:
        raise ValueError("sweep: --grid is required (a YAML file with variants: [{name, train: {...}}, ...])")
    p = Path(path)
    items = load_yaml(p, "grid file").get("variants")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{p}: expected a top-level 'variants:' list of {{name, train: {{...}}, generate: {{...}}}}")
    out: dict[str, dict] = {}
    for i, v in enumerate(items, 1):
        where = f"{p}: variant {i}"
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            raise ValueError(f"{where}: expected a mapping with a 'name'")
        name = v["name"]
        where = f"{p}: variant {name!r}"
        if not _NAME.match(name) or name.startswith("_"):
            raise ValueError(f"{where}: a name is a folder name: letters, digits, . _ + - (not starting with _)")
        if name in out:
            raise ValueError(f"{where}: the name is used twice")
        extra = sorted(set(v) - VARIANT_KEYS)
        if extra:
            raise ValueError(f"{where}: unknown key(s) {extra}; a variant has {sorted(VARIANT_KEYS)} (the data "
                             "stage is shared: set data options in the preset or --config)")
        for stage in ("train", "generate"):
            section = v.get(stage) or {}
            if not isinstance(section, dict):
                raise ValueError(f"{where}: '{stage}' must be a mapping of option: value")
            bad = sorted(set(section) & RESERVED)
            if bad:
                raise ValueError(f"{where}: {stage}.{bad[0]} is set by the sweep itself; remove it")
            try:
                build(stage, {stage: section})  # unknown options and wrong types fail here
            except ValueError as e:
                raise ValueError(f"{where}: {stage}: {e}") from None
        if v.get("reuse") is not None and v.get("train"):
            raise ValueError(f"{where}: a variant that reuses {v['reuse']!r}'s adapter trains nothing; drop 'train'")
        out[name] = {k: v[k] for k in ("name", "train", "generate", "reuse", "note") if v.get(k) is not None}
    for name, v in out.items():
        target = v.get("reuse")
        if target is not None and (target not in out or out[target].get("reuse")):
            raise ValueError(f"{p}: variant {name!r}: reuse names {target!r}, which is not a training variant of "
                             "this grid")
    return out


def plan(root: Path, variant: dict, base: list[dict], variants: dict, data_key: dict, cfg: SweepConfig) -> dict:
    """A variant's stage configs (as plain dicts, for worker processes) and the key of its settings."""
    name = variant["name"]
    trained = variants[variant["reuse"]] if variant.get("reuse") else variant
    run_dir, adapter_dir = root / name, root / trained["name"]
    train_cfg = build("train", *base, {"train": {**(trained.get("train") or {}), "out": str(adapter_dir)}})
    gen = {**(variant.get("generate") or {}), "out": str(run_dir), "split": "validation", "models": ["fine_tuned"],
           "output_file": "validation/eval.csv", "adapter": str(adapter_dir / "adapter")}
    gen_cfg = build("generate", *base, {"generate": gen})
    eval_cfg = build("evaluate", *base, {"evaluate": {"out": str(run_dir / "validation"),
                                                      "eval_csv": str(run_dir / "validation" / "eval.csv"),
                                                      "bertscore_model": cfg.bertscore_model}})
    drop = {"out", "force", "resume", "report_to", "adapter"}
    key = {"train": {k: v for k, v in to_dict(train_cfg).items() if k not in drop},
           "generate": {k: v for k, v in to_dict(gen_cfg).items() if k not in drop},
           "bertscore_model": cfg.bertscore_model, "data": data_key}
    return {"name": name, "variant": variant, "reuse": variant.get("reuse"), "run_dir": str(run_dir),
            "data_dir": str(root / "_data" / "data"), "train": to_dict(train_cfg), "generate": to_dict(gen_cfg),
            "evaluate": to_dict(eval_cfg), "key": _hash(key), "force": cfg.force}


def finished(run_dir: Path, key: str) -> bool:
    return (rundir.stage_info(run_dir, STAGE) or {}).get("key") == key


def result(run_dir: Path, key: str) -> dict | None:
    info = rundir.stage_info(run_dir, STAGE) or {}
    return info.get("row") if info.get("key") == key else None


# ------------------------------------------------------------------------------ running variants


def run_group(names: list[str], plans: dict, cfg: SweepConfig) -> dict[str, str]:
    """Run variants one after another, or in ``parallel`` worker processes. A variant that fails does not
    stop the others; returns the failed ones with their errors."""
    failed: dict[str, str] = {}
    if not names:
        return failed
    workers = min(cfg.parallel, len(names))
    if workers == 1:
        for n in names:
            log.info("variant %s", n)
            try:
                run_variant(plans[n])
            except Exception as e:
                log.error("variant %s failed: %s", n, e, exc_info=log.isEnabledFor(logging.DEBUG))
                failed[n] = str(e)
        return failed
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its own CUDA context
    gpus = context.Queue()
    for i in range(workers):
        gpus.put(cfg.gpus[i % len(cfg.gpus)] if cfg.gpus else None)
    log.info("running %d variant(s), %d at a time%s", len(names), workers,
             f" on GPU(s) {', '.join(cfg.gpus)}" if cfg.gpus else "")
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(gpus, logging.getLogger().level)) as pool:
        jobs = {pool.submit(run_variant, plans[n]): n for n in names}
        for job in futures.as_completed(jobs):
            try:
                job.result()
                log.info("variant %s finished", jobs[job])
            except Exception as e:
                log.error("variant %s failed: %s", jobs[job], e)
                failed[jobs[job]] = str(e)
    return failed


def _init_worker(gpus, level: int) -> None:
    gpu = gpus.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    log.info("worker %d: CUDA_VISIBLE_DEVICES=%s", os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "(all)"))


def run_variant(p: dict) -> dict:
    """Train (unless reused), generate the validation letters, score them; record the row in the marker."""
    generate, evaluate, train = (registry.stage(s).function() for s in ("generate", "evaluate", "train"))

    run_dir = Path(p["run_dir"])
    rundir.stage_marker(run_dir, STAGE).unlink(missing_ok=True)
    # outputs of other settings (an edited grid, or a folder the sweep did not make) are redone, not reused;
    # an attempt with these settings that stopped part-way continues
    previous = rundir.stage_info(run_dir, "sweep_settings")
    changed = p["force"] or (previous.get("key") != p["key"] if previous is not None
                             else (run_dir / ".stages").is_dir())
    rundir.mark_done(run_dir, "sweep_settings", {"key": p["key"]})
    _copy_data(Path(p["data_dir"]), run_dir / "data")
    t0 = time.time()
    train_cfg = TrainConfig(**p["train"])
    if not p["reuse"]:
        train_cfg.force = changed  # else an interrupted training continues from its last checkpoint
        log.info("%s", train(train_cfg))
    t_train = time.time() - t0
    t0 = time.time()
    log.info("%s", generate(GenerateConfig(**{**p["generate"], "force": changed})))
    t_gen = time.time() - t0
    t0 = time.time()
    log.info("%s", evaluate(EvaluateConfig(**{**p["evaluate"], "force": changed})))
    metrics = json.loads((run_dir / "validation" / "metrics.json").read_text(encoding="utf-8"))
    scores = metrics["subsets"]["full"]["models"]["fine_tuned"]
    row = {"variant": p["name"], "reuse": p["reuse"] or "",
           "settings": _settings(p["variant"]), "validation_rows": metrics["input"]["rows"],
           **{f"val_{m}": _num((scores.get(m) or {}).get("mean")) for m in METRICS},
           **_val_loss(Path(p["train"]["out"]) / "adapter" / "covertune_train.json"),
           "train_s": round(t_train, 1) if not p["reuse"] else None, "generate_s": round(t_gen, 1),
           "evaluate_s": round(time.time() - t0, 1)}
    rundir.mark_done(run_dir, STAGE, {"key": p["key"], "row": row})
    return row


def _copy_data(src: Path, dst: Path) -> None:
    """The shared splits into the variant's run directory (again whenever they changed)."""
    if dst.is_dir() and all(_file_sha(src / f.name) == _file_sha(f) for f in dst.glob("*.jsonl")) and \
            {f.name for f in dst.glob("*.jsonl")} == {f.name for f in src.glob("*.jsonl")}:
        return
    with io.atomic_dir(dst) as tmp:
        for f in src.glob("*.jsonl"):
            shutil.copy2(f, tmp / f.name)


def _val_loss(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"val_loss_last": None, "val_loss_min": None}
    evals = [e["eval_loss"] for e in info.get("eval_loss_per_epoch") or []]
    return {"val_loss_last": evals[-1] if evals else None, "val_loss_min": min(evals) if evals else None}


def _settings(variant: dict) -> str:
    parts = {k: variant[k] for k in ("train", "generate", "reuse") if variant.get(k)}
    return yaml.safe_dump(parts, default_flow_style=True, width=10_000).strip() if parts else "{}"


# ------------------------------------------------------------------------------ ranking


class Criterion:
    """How variants are ranked: ``rank_by`` rounded to ``decimals`` in its better direction, then each
    tie-breaker in its better direction, then the name; ``constraints`` say who may be chosen."""

    def __init__(self, rank_by: str, decimals: int, tie_breakers: list[str], constraints: list[str]):
        for metric in [rank_by, *tie_breakers]:
            _check_metric(metric, ranked=True)
        if decimals < 0:
            raise ValueError(f"decimals must be >= 0, got {decimals}")
        self.rank_by, self.decimals, self.tie_breakers = rank_by, decimals, list(tie_breakers)
        self.constraints = [_parse_constraint(c) for c in constraints]

    @classmethod
    def from_config(cls, cfg: SweepConfig) -> "Criterion":
        return cls(cfg.rank_by, cfg.decimals, cfg.tie_breakers, cfg.constraints)

    def metrics(self) -> list[str]:
        return list(dict.fromkeys([self.rank_by, *self.tie_breakers, *(m for m, _, _ in self.constraints)]))

    def describe(self) -> str:
        text = f"{_direction(self.rank_by)} validation {METRICS[self.rank_by].label} to {self.decimals} decimals"
        if self.tie_breakers:
            text += ", ties broken by " + ", then ".join(f"{_direction(m)} {METRICS[m].label}" for m in self.tie_breakers)
        if self.constraints:
            text += "; chosen only if " + " and ".join(f"{m} {op} {v:g}" for m, op, v in self.constraints)
        return text

    def rank(self, table: pd.DataFrame) -> pd.DataFrame:
        table = table.copy()
        keys = []
        for i, metric in enumerate([self.rank_by, *self.tie_breakers]):
            values = pd.to_numeric(table[f"val_{metric}"], errors="coerce")
            if i == 0:
                values = values.round(self.decimals)
            sign = -1 if METRICS[metric].higher_is_better else 1  # ascending sort of sign * value: best first
            table[f"_k{i}"] = (sign * values).fillna(math.inf)  # a missing score ranks last
            keys.append(f"_k{i}")
        fails = []
        for _, row in table.iterrows():
            bad = [f"{m} {row[f'val_{m}']!s} not {op} {v:g}" for m, op, v in self.constraints
                   if _missing(row[f"val_{m}"]) or not _OPS[op](row[f"val_{m}"], v)]
            fails.append("; ".join(bad))
        table["eligible"] = [not f for f in fails]
        table["fails"] = fails
        table["_k_eligible"] = ~table["eligible"]
        table = table.sort_values(["_k_eligible", *keys, "variant"]).drop(columns=["_k_eligible", *keys])
        table.insert(0, "rank", range(1, len(table) + 1))
        return table.reset_index(drop=True)


def _check_metric(metric: str, ranked: bool) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
    if ranked and METRICS[metric].higher_is_better is None:
        raise ValueError(f"{metric} ({METRICS[metric].label}) has no better direction to rank by; use it in a "
                         "constraint instead")


def _parse_constraint(text: str) -> tuple[str, str, float]:
    m = _CONSTRAINT.match(text)
    if not m:
        raise ValueError(f"constraint {text!r}: expected METRIC OP NUMBER, e.g. repetition_ratio<=0.4")
    _check_metric(m.group(1), ranked=False)
    return m.group(1), m.group(2), float(m.group(3))


def _direction(metric: str) -> str:
    return "highest" if METRICS[metric].higher_is_better else "lowest"


# ------------------------------------------------------------------------------ documents


def _md_table(table: pd.DataFrame, criterion: Criterion, short: bool = False) -> str:
    metrics = [m for m in criterion.metrics() if f"val_{m}" in table]
    if "length_chars" not in metrics:
        metrics.append("length_chars")
    head = ["rank", "variant", *([] if short else ["settings"]), *(f"val {METRICS[m].label}" for m in metrics),
            "best val loss", *([] if short else ["train s", "generate s"]), "chosen?"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for i, row in table.iterrows():
        status = ("**winner**" if i == 0 and row["eligible"] else "eligible" if row["eligible"]
                  else f"no: {row['fails']}")
        cells = [str(row["rank"]), row["variant"], *([] if short else [f"`{row['settings']}`"]),
                 *("" if _missing(row[f"val_{m}"]) else METRICS[m].format(row[f"val_{m}"]) for m in metrics),
                 _f(row.get("val_loss_min")),
                 *([] if short else [_f(row.get("train_s"), "{:.1f}"), _f(row.get("generate_s"), "{:.1f}")]), status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(table: pd.DataFrame, criterion: Criterion, cfg: SweepConfig, val_rows: int) -> str:
    return "\n".join([
        "# covertune sweep", "",
        f"Grid `{cfg.grid}`; every variant trained on the train split and generated the {val_rows} validation "
        f"letters (fine-tuned model), scored by covertune evaluate (BERTScore: {cfg.bertscore_model}). The test "
        "split took no part in the choice.", "",
        f"Ranking: {criterion.describe()}.", "",
        _md_table(table, criterion),
        "All validation metrics of every variant: `sweep.csv`; each variant's letters and per-letter scores: "
        "`<variant>/validation/`.", ""])


def plot(table: pd.DataFrame, criterion: Criterion, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = criterion.rank_by
    values = pd.to_numeric(table[f"val_{metric}"], errors="coerce").fillna(0)
    colors = ["tab:orange" if i == 0 and ok else "tab:blue" if ok else "lightgray"
              for i, ok in enumerate(table["eligible"])]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.4))
    ax.barh(range(len(table)), values, color=colors)
    ax.set_yticks(range(len(table)), table["variant"])
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=9)
    ax.set_xlabel(f"validation {METRICS[metric].label} (fine-tuned)")
    ax.set_title("covertune sweep: orange = chosen, gray = fails a constraint")
    ax.set_xlim(0, max(values.max() * 1.18, 1e-6))
    ax.grid(axis="x", alpha=0.3)
    io.save_figure(path, fig)


# ------------------------------------------------------------------------------ the final test evaluation


def final(root: Path, name: str, p: dict, base: list[dict]) -> str:
    """The winner's test letters (base and fine-tuned), evaluation and report, in its run directory, once."""
    generate, evaluate, report = (registry.stage(s).function() for s in ("generate", "evaluate", "report"))

    record = root / FINAL_FILE
    if record.is_file():
        done = json.loads(record.read_text(encoding="utf-8"))
        if done.get("variant") != name:
            raise RuntimeError(f"{record}: the test split was already scored once, for {done.get('variant')!r}; "
                               f"{name!r} now leads on validation. Scoring the test split again would let it take "
                               "part in the choice: keep the first result, or delete the file to score anyway")
    run_dir = Path(p["run_dir"])
    gen = {k: v for k, v in p["generate"].items() if k not in ("split", "models", "output_file")}
    messages = [generate(build("generate", {"generate": {**gen, "split": "test", "models": ["base", "fine_tuned"],
                                                         "output_file": "eval.csv"}})),
                evaluate(build("evaluate", *base, {"evaluate": {"out": str(run_dir), "eval_csv": ""}})),
                report(build("report", *base, {"report": {"out": str(run_dir),
                                                          "title": f"covertune sweep winner: {name} (test split)"}}))]
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    full = metrics["subsets"]["full"]["models"]
    io.write_json(record, {"variant": name, "run_dir": str(run_dir),
                           "test": {m: {k: (v.get("mean") if v else None) for k, v in full[m].items()} for m in full}})
    return "final (test split, once): " + "\n".join(messages)


# ------------------------------------------------------------------------------ helpers


def _file_sha(path: Path) -> str | None:
    return rundir.file_hash(path) if path.is_file() else None


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _missing(x) -> bool:
    return is_nan(x)


def _num(x):
    return None if _missing(x) else float(x)


def _f(x, spec: str = "{:.4f}") -> str:
    return "" if _missing(x) else spec.format(x)
