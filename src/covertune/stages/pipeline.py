"""`covertune run`: data -> train -> (prefer) -> (merge) -> generate -> evaluate -> report in one run directory.

Each stage skips itself when its outputs are complete, so rerunning the same command after a crash
continues where the run stopped. When generate chooses among candidates with ``select: classifier-mbr``
and names no ``classifier``, the letter-quality classifier is trained on the run's train split right
after the data stage (``covertune classify train``; its options from a ``classify`` section). Options come from a preset and/or YAML file (flat keys apply to
every stage that has them; a section per stage overrides), then from the command line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from covertune import registry
from covertune.config.build import build, coerce, to_dict
from covertune.core import distributed, io, rundir

log = logging.getLogger(__name__)

STAGES = registry.pipeline_stages()  # data, train, prefer, merge, generate, evaluate, report


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


def pipeline_configs(layers: list[dict], merge: bool = False, force: bool = False, prefer: bool = False) -> dict:
    """Every stage's config built (and validated) from ``layers`` (later layers win), before any stage runs.
    The optional stages (prefer, merge) are built only when switched on. With prefer, merge and generate
    use the preference adapter (unless they name an adapter themselves)."""
    layers = list(layers) + ([{s: {"force": True} for s in STAGES}] if force else [])
    configs = {stage: build(stage, *layers) for stage in STAGES if stage != "prefer" or prefer}
    if needs_classifier(configs["generate"]):
        configs["classify"] = build("classify", *layers, {"force": True} if force else {})
    if prefer:
        preferred = str(rundir.preference_adapter_dir(configs["prefer"].out))
        configs["generate"].adapter = configs["generate"].adapter or preferred
        if merge:
            configs["merge"].adapter = configs["merge"].adapter or preferred
    if merge:
        configs["generate"].merged = configs["generate"].merged or str(rundir.merged_dir(configs["merge"].out))
    return configs


def needs_classifier(generate_cfg) -> bool:
    """Whether generate will choose by the letter-quality classifier and expects it in the run directory."""
    return generate_cfg.candidates > 1 and generate_cfg.select == "classifier-mbr" and not generate_cfg.classifier


def run_in_processes(stage: str, cfg, processes: int) -> str:
    """``covertune <stage>`` with ``cfg`` in ``processes`` processes (one per GPU) through
    torch.distributed.run: the config goes to them as a YAML file in the run directory."""
    import yaml

    path = Path(cfg.out) / f".{stage}-config.yaml"
    io.write_text(path, yaml.safe_dump({stage: to_dict(cfg)}, sort_keys=False))
    try:
        code = distributed.relaunch(processes, [stage, "--config", str(path)])
    finally:
        path.unlink(missing_ok=True)
    if code:
        raise RuntimeError(f"covertune {stage} in {processes} processes stopped with exit status {code} "
                           "(its error is above); run the same command again to continue")
    return f"ran in {processes} processes"


def run_pipeline(layers: list[dict], merge: bool = False, force: bool = False, prefer: bool = False,
                 num_gpus: int = 1) -> str:
    """Run every stage with configs built from ``layers`` (later layers win); with ``num_gpus`` above 1,
    train and generate run in that many processes, one per GPU, the other stages in this one."""
    configs = pipeline_configs(layers, merge, force, prefer)
    timings = {}
    steps = [s for s in STAGES if s in configs and (s != "merge" or merge)]
    if "classify" in configs:
        steps.insert(steps.index("data") + 1, "classify")
    for stage in steps:
        t0 = time.time()
        log.info("stage %s", stage)
        if num_gpus > 1 and registry.stage(stage).distributed:
            result = run_in_processes(stage, configs[stage], num_gpus)
        else:
            result = registry.stage(stage).function()(configs[stage])
        timings[stage] = time.time() - t0
        if result:
            print(f"[{stage}] {result}")
    out = Path(configs["report"].out)
    summary = ", ".join(f"{s} {t:.0f}s" for s, t in timings.items())
    return f"done ({summary}); report: {out / 'report.html'} and {out / 'report.md'}"


def switch(layers: list[dict], name: str, flag: bool | None) -> tuple[list[dict], bool]:
    """Whether the optional stage ``name`` runs, and the layers without its boolean switches. ``name`` in a
    layer is the switch when it is a boolean (``merge: true``); a mapping is the stage's section (``merge:
    {dtype: fp16}``), which reaches its config and turns it on. The ``--name/--no-name`` flag wins over both."""
    switches = [v if isinstance(v, dict) else coerce(name, v, bool)
                for v in (layer[name] for layer in layers if name in layer)]
    on = bool(flag) if flag is not None else any(bool(v) for v in switches)
    layers = [{k: v for k, v in layer.items() if not (k == name and not isinstance(v, dict))} for layer in layers]
    return layers, on


def run_layers(args, layers: list[dict]) -> tuple[list[dict], bool]:
    """``covertune run``'s option layers (preset, YAML, then its flags) and whether to merge (``switch``)."""
    top = {k: v for k, v in (("out", args.out), ("data", args.data), ("model", args.model)) if v}
    layers = list(layers) + [top, parse_sets(args.set)]
    return switch(layers, "merge", args.merge)


def pipeline_from_args(args, layers: list[dict]) -> str:
    layers, merge = run_layers(args, layers)
    layers, prefer = switch(layers, "prefer", getattr(args, "prefer", None))
    num_gpus = getattr(args, "num_gpus", None) or 1
    if getattr(args, "num_gpus", None) is not None:
        distributed.check_num_gpus(num_gpus, "train")  # before the data stage spends any time
    return run_pipeline(layers, merge=merge, force=args.force, prefer=prefer, num_gpus=num_gpus)
