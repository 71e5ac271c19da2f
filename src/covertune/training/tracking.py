"""Experiment tracking: training logs through transformers' own integrations, offline, in the run directory.

``covertune train --report-to tensorboard wandb mlflow trackio`` (any of them; ``none`` by default) hands the
names to ``TrainingArguments.report_to`` and points each integration at the run:

| tracker | where it writes (nothing leaves the machine) |
| --- | --- |
| tensorboard | event files in ``<out>/tensorboard/`` |
| wandb | offline mode, ``<out>/wandb/``; ``wandb sync`` uploads it later if wanted |
| mlflow | a local file store, ``<out>/mlruns/`` (``mlflow ui --backend-store-uri <out>/mlruns``) |
| trackio | trackio's local database (``TRACKIO_DIR``, by default under ``~/.cache/huggingface/trackio``) |

The run is named after the run directory; the project / experiment is ``covertune``. A tracker setting the
user already exported (``WANDB_MODE``, ``WANDB_DIR``, ``WANDB_PROJECT``, ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``) wins over these defaults. What each tracker's run is called is kept in
``<out>/tracking.json``, so that ``evaluate`` (the test metrics) and ``report`` (its plots) log to the same
runs afterwards, and ``train --resume`` continues them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
import secrets
import shutil
import time
from pathlib import Path

from covertune.core import io, rundir

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
            "trackio": ("trackio",)}
INSTALL = "pip install 'covertune[tracking]'"
TRACKING_FILE = "tracking.json"
PROJECT = "covertune"

# the environment as the process started: a tracker setting found there is the user's and is kept
_USER_ENV = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI",
                                            "MLFLOW_EXPERIMENT_NAME")}


def resolve(report_to: list[str] | str) -> list[str]:
    """The trackers asked for, checked: known names, installed packages. ``none`` (or nothing): []."""
    if isinstance(report_to, str):
        report_to = [report_to]
    names = list(dict.fromkeys(n.strip().lower() for n in report_to if n and n.strip()))
    if not names or names == ["none"]:
        return []
    if "none" in names:
        raise ValueError(f"report_to: 'none' stands alone; got {', '.join(names)}")
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {', '.join(unknown)}; choose none or any of "
                         f"{', '.join(TRACKERS)}")
    missing = [n for n in names if not any(importlib.util.find_spec(p) for p in PACKAGES[n])]
    if missing:
        raise ImportError(f"--report-to {' '.join(missing)} needs the {' and '.join(PACKAGES[n][0] for n in missing)} "
                          f"package{'s' if len(missing) > 1 else ''}: {INSTALL}")
    return names


def trainer_args(report_to: list[str] | str, out: str | Path, resume: bool = False) -> dict:
    """TrainingArguments options (report_to, run_name, project) for the trackers asked for, with each one
    pointed at the run directory; writes ``<out>/tracking.json``. A fresh run starts new tracker runs (and
    clears ``<out>/tensorboard``); ``resume`` continues the ones recorded."""
    names = resolve(report_to)
    if not names:
        return {"report_to": "none"}
    out = Path(out).resolve()
    previous = read(out) if resume else {}
    name = out.name
    info: dict = {"report_to": names, "run_name": name, "project": PROJECT}
    if "tensorboard" in names:
        log_dir = out / "tensorboard"
        if not resume:
            shutil.rmtree(log_dir, ignore_errors=True)
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
        info["tensorboard"] = {"log_dir": str(log_dir)}
    if "wandb" in names:
        info["wandb"] = _wandb_run(out, name, previous.get("wandb"))
    if "mlflow" in names:
        info["mlflow"] = _mlflow_run(out, name, previous.get("mlflow"))
    if "trackio" in names:
        info["trackio"] = {"project": PROJECT, "name": name}
    io.write_json(out / TRACKING_FILE, info)
    log.info("reporting training to %s as run %r (%s)", ", ".join(names), name, out / TRACKING_FILE)
    args = {"report_to": names, "run_name": name}
    from transformers import TrainingArguments

    if "project" in {f.name for f in dataclasses.fields(TrainingArguments)}:  # trackio's project (transformers 5.x)
        args["project"] = PROJECT
    return args


def read(out: str | Path) -> dict:
    """What ``<out>/tracking.json`` recorded; {} where training reported to no tracker."""
    path = Path(out) / TRACKING_FILE
    if not path.is_file():
        return {}
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        log.warning("%s is not valid JSON (%s): nothing is logged to the training's trackers", path, e)
        return {}


def _env(key: str, value: str) -> str:
    """Set a tracker variable unless the user had set it before covertune started; the value in force."""
    if _USER_ENV.get(key) is not None:
        os.environ[key] = _USER_ENV[key]
        return _USER_ENV[key]
    os.environ[key] = value
    return value


def _wandb_run(out: Path, name: str, previous: dict | None) -> dict:
    """Start the W&B run here, with every setting given to wandb.init (wandb reads its environment once per
    process, so a second training in the same process could not be pointed elsewhere by variables);
    transformers' callback then logs into this open run."""
    import wandb

    if wandb.run is not None:  # transformers' callback leaves its run open: an earlier training's, here
        wandb.finish()
    mode = _USER_ENV.get("WANDB_MODE") or "offline"
    directory = _USER_ENV.get("WANDB_DIR") or str(out)
    project = _USER_ENV.get("WANDB_PROJECT") or PROJECT
    run_id = (previous or {}).get("id") or secrets.token_hex(4)
    Path(directory).mkdir(parents=True, exist_ok=True)
    wandb.init(id=run_id, name=name, project=project, dir=directory, mode=mode, resume="allow")
    return {"id": run_id, "project": project, "dir": directory, "mode": mode}


def _mlflow_run(out: Path, name: str, previous: dict | None) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = _env("MLFLOW_TRACKING_URI", (out / "mlruns").as_uri())
    if uri.startswith("file:"):  # MLflow 3.x keeps its file store behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    experiment = _env("MLFLOW_EXPERIMENT_NAME", PROJECT)
    mlflow.set_tracking_uri(uri)  # transformers' callback keeps a URI set earlier in the process
    client = MlflowClient(uri)
    run_id = (previous or {}).get("run_id")
    if run_id is None:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
    os.environ["MLFLOW_RUN_ID"] = run_id  # transformers' callback continues this run
    return {"tracking_uri": uri, "experiment": experiment, "run_id": run_id}


# ------------------------------------------------------------------ after training: metrics and plots


def evaluation_scalars(metrics: dict) -> dict[str, float]:
    """``evaluate/<subset>/<model>/<metric>`` -> mean, from an evaluate stage's metrics.json."""
    out = {}
    for subset, entry in metrics.get("subsets", {}).items():
        for model, values in entry.get("models", {}).items():
            for metric, stats in values.items():
                mean = stats.get("mean")
                if mean is not None and not (isinstance(mean, float) and math.isnan(mean)):
                    out[f"evaluate/{subset}/{model}/{metric}"] = float(mean)
    return out


def log_results(out: str | Path, scalars: dict[str, float] | None = None,
                figures: list[str | Path] | None = None) -> list[str]:
    """Log numbers and PNG figures to the tracker runs the run's training reported to (tracking.json);
    nothing when it reported to none. A tracker that fails is reported in the log, never fatal. Returns the
    trackers written to."""
    info = read(out)
    names = [n for n in info.get("report_to", []) if n in info]
    if not names:
        return []
    scalars = scalars or {}
    figures = [Path(f) for f in figures or [] if Path(f).is_file()]
    step = (rundir.stage_info(out, "train") or {}).get("global_step") or 0
    done = []
    for name in names:
        try:
            {"tensorboard": _log_tensorboard, "wandb": _log_wandb, "mlflow": _log_mlflow,
             "trackio": _log_trackio}[name](info, scalars, figures, step)
            done.append(name)
        except Exception as e:  # a tracker's failure must not lose the stage's own outputs
            log.warning("could not log to %s: %s", name, e)
    if done:
        log.info("logged %d number(s) and %d figure(s) to %s", len(scalars), len(figures), ", ".join(done))
    return done


def _png(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]  # HWC floats in [0, 1]; the alpha channel dropped


def _log_tensorboard(info: dict, scalars: dict, figures: list[Path], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=info["tensorboard"]["log_dir"])
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        for path in figures:
            writer.add_image(f"figures/{path.stem}", _png(path), step, dataformats="HWC")
    finally:
        writer.close()


def _log_wandb(info: dict, scalars: dict, figures: list[Path], step: int) -> None:
    import wandb

    w = info["wandb"]
    if wandb.run is not None:  # the training's run, left open by transformers' callback in this process
        wandb.finish()
    run = wandb.init(id=w["id"], project=w["project"], dir=w["dir"], mode=w.get("mode", "offline"),
                     name=info["run_name"], resume="allow")
    try:
        run.log({**scalars, **{f"figures/{p.stem}": wandb.Image(str(p)) for p in figures}})
        run.summary.update(scalars)
    finally:
        run.finish()


def _log_mlflow(info: dict, scalars: dict, figures: list[Path], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    m = info["mlflow"]
    client = MlflowClient(m["tracking_uri"])
    now = int(time.time() * 1000)
    if scalars:
        client.log_batch(m["run_id"], metrics=[Metric(k, v, now, step) for k, v in scalars.items()])
    for path in figures:
        client.log_artifact(m["run_id"], str(path), artifact_path="figures")


def _log_trackio(info: dict, scalars: dict, figures: list[Path], step: int) -> None:
    import trackio

    t = info["trackio"]
    trackio.init(project=t["project"], name=t["name"], resume="allow")
    try:
        trackio.log({**scalars, **{f"figures/{p.stem}": trackio.Image(str(p)) for p in figures}})
    finally:
        trackio.finish()
