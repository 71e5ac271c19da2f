"""`covertune run` end to end on a tiny random Llama and the packaged sample."""

from __future__ import annotations

import json

from covertune.core import rundir
from covertune.cli import main
from covertune.stages.pipeline import parse_sets


def _args(tiny_model_dir, out):
    return ["run", "--preset", "demo", "--out", str(out), "--model", str(tiny_model_dir),
            "--set", "train.max_steps=2", "--set", "train.compute_dtype=fp32",
            "--set", "generate.max_new_tokens=8",
            # a random model's greedy choice is one white-space token, which leaves an empty letter
            "--set", "generate.do_sample=true", "--set", "generate.limit=3",
            "--set", "evaluate.bertscore_model=none"]


def test_run_chains_every_stage_and_skips_finished_ones(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(tiny_model_dir, out)) == 0
    for stage in ("data", "train", "generate", "evaluate", "report"):
        assert rundir.is_done(out, stage), stage
    for name in ("data/test.jsonl", "adapter/adapter_config.json", "eval.csv", "metrics.json", "report.html"):
        assert (out / name).exists(), name
    printed = capsys.readouterr().out
    assert "report.html" in printed
    # a second run finds every stage complete and redoes nothing
    stamp = (out / "eval.csv").stat().st_mtime_ns
    assert main(_args(tiny_model_dir, out)) == 0
    assert (out / "eval.csv").stat().st_mtime_ns == stamp
    assert "skipped" in capsys.readouterr().out
    # new settings never return the old results: the train stage refuses, naming what changed
    assert main(_args(tiny_model_dir, out) + ["--set", "train.learning_rate=0.002"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("covertune run: error: ") and "\n" not in err
    assert "learning_rate 0.001 -> 0.002" in err and "--force" in err
    assert (out / "eval.csv").stat().st_mtime_ns == stamp


def test_run_continues_an_interrupted_training(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    base = _args(tiny_model_dir, out)
    # a first run trains 2 steps with a checkpoint each step, then "crashes": the marker is removed
    assert main(base + ["--set", "train.save_strategy=steps", "--set", "train.save_steps=1"]) == 0
    rundir.stage_marker(out, "train").unlink()
    (out / "adapter").rename(out / "adapter.old")
    assert main(base + ["--set", "train.max_steps=3", "--set", "train.save_strategy=steps",
                        "--set", "train.save_steps=1"]) == 0
    steps = [json.loads(line).get("step") for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 3
    assert (out / "adapter" / "adapter_config.json").exists()


def test_parse_sets():
    assert parse_sets(["train.epochs=2", "out=runs/x"]) == {"train": {"epochs": "2"}, "out": "runs/x"}


def test_run_trains_the_classifier_that_classifier_mbr_needs(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, out)
    at = args.index("generate.do_sample=true")
    del args[at - 1:at + 1]  # candidates are sampled already
    args += ["--set", "generate.candidates=3", "--set", "generate.select=classifier-mbr",
             "--set", "generate.candidate_temperature=1.5",
             "--set", "classify.folds=2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[classify] classify: wrote" in printed
    assert rundir.is_done(out, "classify") and (out / "classifier" / "classifier.json").exists()
    side = [json.loads(line) for line in (out / "candidates" / "test.fine_tuned.jsonl").read_text().splitlines()]
    assert len(side) == 3 and all(r["select"] == "classifier-mbr" and "quality" in r["candidates"][0] for r in side)
    # without classifier-mbr no classifier is trained
    other = tmp_path / "other"
    assert main(_args(tiny_model_dir, other)) == 0
    assert not (other / "classifier").exists() and "[classify]" not in capsys.readouterr().out

def test_run_with_the_prefer_stage_generates_from_the_preference_adapter(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    prefer = ["--prefer", "--set", "prefer.candidates=2", "--set", "prefer.max_new_tokens=8",
              "--set", "prefer.reject=any", "--set", "prefer.chosen_fallback=ground_truth",
              "--set", "prefer.max_pairs=4", "--set", "prefer.batch_size=2", "--set", "prefer.sample_batch_size=4",
              "--set", "prefer.compute_dtype=fp32", "--set", "prefer.max_length=512"]
    assert main(_args(tiny_model_dir, out) + prefer) == 0
    assert rundir.is_done(out, "prefer") and (out / "preference_adapter" / "adapter_config.json").exists()
    header = json.loads((out / ".generate" / "test.fine_tuned.jsonl").read_text().splitlines()[0])
    assert header["settings"]["adapter"]["path"] == str((out / "preference_adapter").resolve())
    assert 0 < len((out / "preference" / "pairs.jsonl").read_text().splitlines()) <= 4
