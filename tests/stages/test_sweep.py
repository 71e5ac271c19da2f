"""covertune sweep on a tiny random Llama and the packaged sample: rank on validation, resume, --final."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

from covertune.core import io
from covertune.config.stages import SweepConfig
from covertune.metrics.rouge import rouge_l_many
from covertune.stages.sweep import Criterion, read_grid, sweep

GRID = {"variants": [
    {"name": "slow", "train": {"learning_rate": 0.0001}},
    {"name": "fast", "train": {"learning_rate": 0.01, "lora_r": 4}},
]}


def _recipe(tiny_model_dir) -> list[dict]:
    # a random model's greedy letter is one white-space token: sample a few tokens instead
    return [{"data": "sample", "model": str(tiny_model_dir), "val_size": 4,
             "train": {"quantization": "none", "compute_dtype": "fp32", "max_steps": 3, "batch_size": 2,
                       "max_length": 256, "eval_strategy": "no", "save_strategy": "no", "logging_steps": 1},
             "generate": {"max_new_tokens": 8, "do_sample": True, "batch_size": 4}}]


@pytest.fixture(scope="module")
def swept(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    grid = root / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    cfg = SweepConfig(grid=str(grid), root=str(root / "out"))
    message = sweep(cfg, _recipe(tiny_model_dir))
    return cfg, root / "out", message


def test_variants_are_ranked_by_their_validation_scores(swept):
    cfg, root, message = swept
    table = pd.read_csv(root / "sweep.csv")
    assert set(table["variant"]) == {"slow", "fast"}
    for _, row in table.iterrows():  # the table's score is the mean ROUGE-L of the variant's validation letters
        letters = pd.read_csv(root / row["variant"] / "validation" / "eval.csv", dtype=str, keep_default_na=False)
        assert len(letters) == row["validation_rows"] == 4
        expected = statistics.mean(rouge_l_many(letters["ground_truth"].tolist(),
                                                letters["fine_tuned_output"].tolist()))
        assert row["val_rougeL_f"] == pytest.approx(expected)
    scores = dict(zip(table["variant"], table["val_rougeL_f"]))
    assert round(scores["slow"], 3) != round(scores["fast"], 3)  # the two recipes wrote different letters
    winner = max(scores, key=scores.get)
    assert table.iloc[0]["variant"] == winner and table.iloc[0]["rank"] == 1
    best = yaml.safe_load((root / "best.yaml").read_text())
    assert best["chosen_on"] == "validation" and best["variant"]["name"] == winner
    assert f"best on validation: {winner}" in message
    md = (root / "sweep.md").read_text()
    assert "| 1 | " + winner in md and "**winner**" in md
    assert (root / "sweep.png").stat().st_size > 0


def test_the_test_split_takes_no_part(swept):
    _, root, _ = swept
    for name in ("slow", "fast"):
        assert not (root / name / "eval.csv").exists()
        assert not list((root / name / ".generate").glob("test.*"))
    assert not (root / "final.json").exists()


def test_a_second_call_reruns_nothing_and_final_tests_the_winner_once(swept, tiny_model_dir, caplog):
    cfg, root, _ = swept
    stamps = {f: f.stat().st_mtime_ns for name in ("slow", "fast")
              for f in [root / name / "adapter" / "adapter_model.safetensors",
                        root / name / "validation" / "eval.csv", root / name / "validation" / "metrics.json"]}
    cfg.final = True
    with caplog.at_level("INFO", logger="covertune.stages.sweep"):
        message = sweep(cfg, _recipe(tiny_model_dir))
    assert "not run again: slow, fast" in caplog.text
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps
    winner = pd.read_csv(root / "sweep.csv").iloc[0]["variant"]
    final = json.loads((root / "final.json").read_text())
    assert final["variant"] == winner and "final (test split, once)" in message
    test = pd.read_csv(root / winner / "eval.csv", dtype=str, keep_default_na=False)
    assert len(test) == len(io.read_jsonl(root / "_data" / "data" / "test.jsonl"))
    assert (test["base_output"] != "").any() and (test["fine_tuned_output"] != "").any()
    assert (root / winner / "report.html").exists()
    # the test split is scored once: another winner later is refused
    final["variant"] = "someone-else"
    (root / "final.json").write_text(json.dumps(final))
    with pytest.raises(RuntimeError, match="already scored once"):
        sweep(cfg, _recipe(tiny_model_dir))


def test_a_changed_variant_runs_again(swept, tiny_model_dir, tmp_path):
    cfg, root, _ = swept
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"variants": [{"name": "slow", "train": {"learning_rate": 0.0002}}]}))
    before = (root / "slow" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    sweep(SweepConfig(grid=str(grid), root=str(root)), _recipe(tiny_model_dir))
    assert (root / "slow" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns != before
    info = json.loads((root / "slow" / "adapter" / "covertune_train.json").read_text())
    assert info["learning_rate"] == 0.0002


def test_a_failed_variant_leaves_the_others_ranked(swept, tiny_model_dir, tmp_path):
    cfg, root, _ = swept
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"variants": [GRID["variants"][1],  # "fast", finished: not run again
                                                 {"name": "huge", "train": {"batch_size": 1000}}]}))
    with pytest.raises(RuntimeError, match=r"1 variant\(s\) failed \(huge: .*batch_size 1000"):
        sweep(SweepConfig(grid=str(grid), root=str(root)), _recipe(tiny_model_dir))
    assert list(pd.read_csv(root / "sweep.csv")["variant"]) == ["fast"]
    assert not (root / "huge" / "adapter").exists()


def test_ranking_tie_breakers_and_constraints():
    rows = pd.DataFrame([
        {"variant": "a", "val_rougeL_f": 0.40012, "val_unsupported_numbers": 0.3, "val_repetition_ratio": 0.5},
        {"variant": "b", "val_rougeL_f": 0.40034, "val_unsupported_numbers": 0.1, "val_repetition_ratio": 0.6},
        {"variant": "c", "val_rougeL_f": 0.45, "val_unsupported_numbers": 0.9, "val_repetition_ratio": 0.7},
    ])
    ranked = Criterion("rougeL_f", 3, ["unsupported_numbers", "repetition_ratio"], []).rank(rows)
    assert list(ranked["variant"]) == ["c", "b", "a"]  # a and b tie at 3 decimals: fewer unsupported numbers wins
    ranked = Criterion("rougeL_f", 3, ["unsupported_numbers"], ["repetition_ratio<=0.65"]).rank(rows)
    assert list(ranked["variant"]) == ["b", "a", "c"] and list(ranked["eligible"]) == [True, True, False]
    assert "repetition_ratio" in ranked.iloc[2]["fails"]
    with pytest.raises(ValueError, match="no better direction"):
        Criterion("length_chars", 3, [], [])
    with pytest.raises(ValueError, match="METRIC OP NUMBER"):
        Criterion("rougeL_f", 3, [], ["repetition below 0.4"])


@pytest.mark.parametrize("grid, message", [
    ({"variants": [{"name": "a"}, {"name": "a"}]}, "used twice"),
    ({"variants": [{"name": "a", "train": {"lora_rank": 4}}]}, "unknown option"),
    ({"variants": [{"name": "a", "train": {"out": "x"}}]}, "set by the sweep itself"),
    ({"variants": [{"name": "b", "reuse": "a"}]}, "reuse names 'a'"),
    ({"variants": [{"name": "a/b"}]}, "folder name"),
    ({"variants": [{"name": "a", "data": {"val_size": 3}}]}, "unknown key"),
    ({"runs": []}, "top-level 'variants:'"),
])
def test_bad_grids_are_named(tmp_path, grid, message):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ValueError, match=message) as e:
        read_grid(str(path))
    assert str(path) in str(e.value)


def test_parallel_workers_get_their_gpus_in_turn(monkeypatch):
    import multiprocessing

    from covertune.stages.sweep import _init_worker

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    queue = multiprocessing.get_context("spawn").Queue()
    for gpu in ("2", None):
        queue.put(gpu)
    _init_worker(queue, 20)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    _init_worker(queue, 20)  # no --gpus: the worker sees what the sweep sees
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
