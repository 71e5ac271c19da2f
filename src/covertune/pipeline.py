"""`covertune run`: data -> train -> (merge) -> generate -> evaluate -> report in one run directory.

Each stage skips itself when its outputs are complete, so rerunning the same command after a crash
continues where the run stopped. When generate chooses among candidates with ``select: classifier-mbr``
and names no ``classifier``, the letter-quality classifier is trained on the run's train split right
after the data stage (``covertune classify train``; its options from a ``classify`` section). Options come from a preset and/or YAML file (flat keys apply to
every stage that has them; a section per stage overrides), then from the command line.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from covertune import rundir
from covertune.config import build, coerce

log = logging.getLogger(__name__)

STAGES = ("data", "train", "merge", "generate", "evaluate", "report")
STAGE_FUNCTIONS = {
    "data": "covertune.data.stage:run_data",
    "train": "covertune.train:train",
    "merge": "covertune.merge:merge",
    "generate": "covertune.generate:generate",
    "evaluate": "covertune.metrics.evaluate:evaluate",
    "report": "covertune.report:report",
    "write": "covertune.write:write",  # commands that use a run's model; not pipeline stages
    "serve": "covertune.serve.app:serve",
    "export": "covertune.export:export",
    "sweep": "covertune.sweep:sweep",
    "compare": "covertune.compare:compare",
    "classify": "covertune.classify.stage:classify",
}


def stage_function(stage: str):
    module, func = STAGE_FUNCTIONS[stage].split(":")
    return getattr(importlib.import_module(module), func)


def parse_sets(items: list[str]) -> dict:
    """``["train.epochs=2", "out=runs/x"]`` -> ``{"train": {"epochs": "2"}, "out": "runs/x"}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects STAGE.OPTION=VALUE, got {item!r}")
        stage, dot, name = key.partition(".")
        if dot:
            out.setdefault(stage, {})[name.replace("-", "_")] = value
        else:
            out[key.replace("-", "_")] = value
    return out


def pipeline_configs(layers: list[dict], merge: bool = False, force: bool = False) -> dict:
    """Every stage's config built (and validated) from ``layers`` (later layers win), before any stage runs."""
    layers = list(layers) + ([{s: {"force": True} for s in STAGES}] if force else [])
    configs = {stage: build(stage, *layers) for stage in STAGES}
    if needs_classifier(configs["generate"]):
        configs["classify"] = build("classify", *layers, {"force": True} if force else {})
    if merge:
        configs["generate"].merged = configs["generate"].merged or str(rundir.merged_dir(configs["merge"].out))
    return configs


def needs_classifier(generate_cfg) -> bool:
    """Whether generate will choose by the letter-quality classifier and expects it in the run directory."""
    return generate_cfg.candidates > 1 and generate_cfg.select == "classifier-mbr" and not generate_cfg.classifier


def run_pipeline(layers: list[dict], merge: bool = False, force: bool = False) -> str:
    """Run every stage with configs built from ``layers`` (later layers win)."""
    configs = pipeline_configs(layers, merge, force)
    timings = {}
    steps = [s for s in STAGES if s != "merge" or merge]
    if "classify" in configs:
        steps.insert(steps.index("data") + 1, "classify")
    for stage in steps:
        t0 = time.time()
        log.info("stage %s", stage)
        result = stage_function(stage)(configs[stage])
        timings[stage] = time.time() - t0
        if result:
            print(f"[{stage}] {result}")
    out = Path(configs["report"].out)
    summary = ", ".join(f"{s} {t:.0f}s" for s, t in timings.items())
    return f"done ({summary}); report: {out / 'report.html'} and {out / 'report.md'}"


def run_layers(args, layers: list[dict]) -> tuple[list[dict], bool]:
    """``covertune run``'s option layers (preset, YAML, then its flags) and whether to merge. ``merge``
    in a layer is the switch when it is a boolean (``merge: true``); a mapping is the merge stage's
    section (``merge: {dtype: fp16}``), which reaches the merge config and turns merging on. The
    ``--merge/--no-merge`` flag wins over both."""
    top = {k: v for k, v in (("out", args.out), ("data", args.data), ("model", args.model)) if v}
    layers = list(layers) + [top, parse_sets(args.set)]
    switches = [v if isinstance(v, dict) else coerce("merge", v, bool)
                for v in (layer["merge"] for layer in layers if "merge" in layer)]
    merge = bool(args.merge) if args.merge is not None else any(bool(v) for v in switches)
    layers = [{k: v for k, v in layer.items() if not (k == "merge" and not isinstance(v, dict))}
              for layer in layers]
    return layers, merge


def pipeline_from_args(args, layers: list[dict]) -> str:
    layers, merge = run_layers(args, layers)
    return run_pipeline(layers, merge=merge, force=args.force)
