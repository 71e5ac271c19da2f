"""Training logs to experiment trackers (transformers' integrations, offline) on a tiny random Llama."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from covertune.training import tracking
from covertune.cli import main
from covertune.config.build import build
from covertune.stages.data import run_data
from covertune.stages.generate import generate
from covertune.stages.evaluate import evaluate
from covertune.stages.report import report
from covertune.stages.train import train

TRAIN = {"quantization": "none", "compute_dtype": "fp32", "max_steps": 3, "batch_size": 2, "logging_steps": 1,
         "max_length": 256, "eval_strategy": "no", "save_strategy": "no"}


@pytest.fixture(autouse=True)
def _restore_environment():
    """The trackers' variables set for a run do not leak into other tests."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _run(tiny_model_dir, out: Path, report_to: list[str]) -> Path:
    run_data(build("data", {"data": "sample", "out": str(out), "val_size": 4}))
    train(build("train", {"model": str(tiny_model_dir), "out": str(out), "report_to": report_to, **TRAIN}))
    return out


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tb_run(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("tensorboard")
    return _run(tiny_model_dir, tmp_path_factory.mktemp("runs") / "tb-run", ["tensorboard"])


def test_tensorboard_event_files_hold_the_training_loss(tb_run):
    log_dir = tb_run / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    scalars = _scalars(log_dir)
    logged = [json.loads(line) for line in (tb_run / "train_log.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in logged if "loss" in r}
    assert sorted(s for s, _ in scalars["train/loss"]) == sorted(losses) == [1, 2, 3]
    for step, value in scalars["train/loss"]:  # the same numbers as train_log.jsonl
        assert value == pytest.approx(losses[step], rel=1e-5)
    info = tracking.read(tb_run)
    assert info["run_name"] == "tb-run" and info["tensorboard"]["log_dir"] == str(log_dir.resolve())


def test_evaluate_logs_test_metrics_to_the_training_run(tb_run, tiny_model_dir):
    # a random model's greedy letter is one white-space token: sample a few tokens instead
    generate(build("generate", {"model": str(tiny_model_dir), "out": str(tb_run), "limit": 3,
                                "max_new_tokens": 8, "do_sample": True}))
    evaluate(build("evaluate", {"out": str(tb_run), "bertscore_model": "none"}))
    metrics = json.loads((tb_run / "metrics.json").read_text())
    scalars = _scalars(tb_run / "tensorboard")
    tag = "evaluate/full/fine_tuned/rougeL_f"
    assert scalars[tag] == [(3, pytest.approx(metrics["subsets"]["full"]["models"]["fine_tuned"]["rougeL_f"]["mean"]))]
    assert "train/loss" in scalars  # one run: the training's and the evaluation's numbers together
    # the report's plots go to the same run as images
    report(build("report", {"out": str(tb_run)}))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "figures/rouge_l" in acc.Tags()["images"]
    image = acc.Images("figures/rouge_l")[0]
    assert image.step == 3 and image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_offline_and_mlflow_file_store(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setitem(tracking._USER_ENV, key, None)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = _run(tiny_model_dir, tmp_path / "both", ["wandb", "mlflow"])
    info = tracking.read(out)
    assert info["wandb"]["mode"] == "offline"
    assert list((out / "wandb").glob(f"offline-run-*-{info['wandb']['id']}"))
    from mlflow.tracking import MlflowClient

    assert info["mlflow"]["tracking_uri"] == (out / "mlruns").resolve().as_uri()
    client = MlflowClient(info["mlflow"]["tracking_uri"])
    run = client.get_run(info["mlflow"]["run_id"])
    assert run.info.run_name == "both" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    # the report's plots go to the same MLflow run as artifacts
    png = tmp_path / "plot.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(png)
    plt.close(fig)
    assert "mlflow" in tracking.log_results(out, {"evaluate/full/fine_tuned/rougeL_f": 0.25}, [png])
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/plot.png"]
    assert client.get_run(run.info.run_id).data.metrics["evaluate/full/fine_tuned/rougeL_f"] == 0.25
    # W&B's offline run files (its history keys are stored as text in their protobuf records): the training's
    # loss in the training run, the evaluation's number in the continuation of the same run id
    records = [f.read_bytes() for f in sorted((out / "wandb").glob(f"offline-run-*-{info['wandb']['id']}/*.wandb"))]
    assert len(records) == 2 and b"train/loss" in records[0] and b"evaluate/full/fine_tuned/rougeL_f" in records[1]
    # a second training in the same process (a sequential sweep) gets runs of its own
    second = tracking.read(_run(tiny_model_dir, tmp_path / "second", ["wandb", "mlflow"]))
    assert second["wandb"]["id"] != info["wandb"]["id"] and second["run_name"] == "second"
    assert list((tmp_path / "second" / "wandb").glob(f"offline-run-*-{second['wandb']['id']}"))
    client2 = MlflowClient(second["mlflow"]["tracking_uri"])
    assert [m.step for m in client2.get_metric_history(second["mlflow"]["run_id"], "loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]  # untouched


def test_report_to_is_checked():
    assert tracking.resolve(["none"]) == [] and tracking.resolve([]) == []
    with pytest.raises(ValueError, match="unknown tracker.*comet"):
        tracking.resolve(["comet"])
    with pytest.raises(ValueError, match="stands alone"):
        tracking.resolve(["none", "tensorboard"])


def test_missing_package_names_the_extra(tiny_model_dir, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs the wandb package: pip install 'covertune\[tracking\]'"):
        tracking.resolve(["wandb"])
    run_data(build("data", {"data": "sample", "out": str(tmp_path), "val_size": 4}))
    code = main(["train", "--out", str(tmp_path), "--model", str(tiny_model_dir), "--report-to", "wandb"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "covertune[tracking]" in err
    assert not (tmp_path / "adapter").exists()
