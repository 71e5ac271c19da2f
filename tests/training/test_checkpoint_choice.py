"""Choosing the adapter among a run's checkpoints by the task (covertune.checkpoint_choice), on a tiny
random Llama (CPU, fp32): the per-checkpoint curve holds real scores, the chosen checkpoint becomes the
adapter, early stopping, a continued run does not score a checkpoint twice, option errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from covertune.training import checkpoint_choice
from covertune.core import io, rundir
from covertune.training.checkpoint_choice import choose
from covertune.config.stages import EvaluateConfig, GenerateConfig, TrainConfig
from covertune.config.build import build

FAST = dict(quantization="none", compute_dtype="fp32", max_length=512, batch_size=2, grad_accum=1,
            logging_steps=1, seed=0, learning_rate=1e-2, target_modules=["all-linear"])
NEW_TOKENS = 24  # short validation letters: the scores are real, the tests fast


@pytest.fixture(scope="module")
def short_records(dataset_dir, tiny_model_dir, make_short_records):
    """Real rows, letters shortened, whose prompts fit max_length 512 with the tiny tokenizer."""
    rows = make_short_records(dataset_dir, tiny_model_dir, 40, 300, 400, "train")
    assert len(rows) >= 8
    return rows


def make_run(root: Path, rows: list[dict]) -> Path:
    io.write_jsonl(root / "data" / "train.jsonl", rows[:4])  # 2 optimizer steps per epoch
    io.write_jsonl(root / "data" / "validation.jsonl", rows[4:7])
    return root


def read_log(out: Path) -> list[dict]:
    return io.read_jsonl(out / "train_log.jsonl")


def weights(path: Path) -> dict:
    return load_file(str(path / "adapter_model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


# ---------------------------------------------------------------- the criteria on known scores


def rec(step, rouge=None, facts=None, loss=None):
    r = {"step": step, "epoch": step / 2, "eval_loss": loss}
    if rouge is not None:
        r["task"] = {"rougeL_f": rouge, "unsupported_facts": facts}
    return r


def test_each_criterion_on_known_scores():
    records = [rec(2, 0.30, 0.00, 2.0), rec(4, 0.36, 0.05, 1.5), rec(6, 0.34, 0.005, 1.4), rec(8, 0.33, 0.0, 1.6)]
    assert choose(records, "last")[0]["step"] == 8
    assert choose(records, "loss")[0]["step"] == 6
    assert choose(records, "rouge_l")[0]["step"] == 4  # the closest letters, but they invent facts
    best, why = choose(records, "task", margin=0.01)
    assert best["step"] == 6 and "within 0.01 of the fewest (0.0000)" in why  # 0.005 <= 0 + 0.01
    assert choose(records, "task", margin=0.0)[0]["step"] == 8  # only the fact-free ones: 0.33 > 0.30
    assert choose(records, "task", margin=1.0)[0]["step"] == 4  # a margin this wide is rouge_l
    # ties: fewer unsupported facts, then the earlier checkpoint
    tied = [rec(2, 0.4, 0.02), rec(4, 0.4, 0.01), rec(6, 0.4, 0.01)]
    assert choose(tied, "rouge_l")[0]["step"] == 4
    assert choose([rec(2, loss=1.0), rec(4, loss=1.0)], "loss")[0]["step"] == 2


def test_only_checkpoints_on_disk_are_chosen_and_the_bar_counts_every_one():
    records = [rec(2, 0.30, 0.005), rec(4, 0.35, 0.012), rec(6, 0.10, 0.0)]
    assert choose(records, "task", 0.01)[0]["step"] == 2  # step 4 invents 0.012 > 0 + 0.01
    best, _ = choose(records, "task", 0.01, available={4, 6})  # step 2 was rotated away
    assert best["step"] == 6  # the bar still comes from every checkpoint scored: step 4 stays out
    assert choose(records, "rouge_l", available={2, 6})[0]["step"] == 2
    assert choose([rec(2)], "task", 0.01)[0] is None  # nothing scored: nothing chosen


def test_a_default_run_keeps_its_fingerprint(tmp_path):
    """The selection options enter the train fingerprint only where they change the adapter."""
    from covertune.stages.train import fingerprint

    io.write_jsonl(tmp_path / "data" / "train.jsonl", [{"a": 1}])
    io.write_jsonl(tmp_path / "data" / "validation.jsonl", [{"a": 2}])
    settings = fingerprint(TrainConfig(out=str(tmp_path)))["settings"]
    assert not set(checkpoint_choice.OPTIONS) & set(settings)
    loss = fingerprint(TrainConfig(out=str(tmp_path), select_checkpoint="loss", task_eval_rows=5))["settings"]
    assert loss["select_checkpoint"] == "loss" and "task_eval_rows" not in loss
    task = fingerprint(TrainConfig(out=str(tmp_path), select_checkpoint="task", task_eval_rows=5))["settings"]
    assert task["task_eval_rows"] == 5 and task["task_grounding_margin"] == 0.01


# ---------------------------------------------------------------- real training runs


@pytest.fixture(scope="module")
def task_run(tiny_model_dir, short_records, tmp_path_factory):
    """5 epochs of 2 steps; every epoch's validation letters written and scored; the task criterion. (The
    tiny model writes words from the fourth epoch on.)"""
    from covertune.stages.train import train

    out = make_run(tmp_path_factory.mktemp("task-run"), short_records)
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=5, select_checkpoint="task",
                      task_eval_max_new_tokens=NEW_TOKENS, task_eval_batch_size=2, save_total_limit=5,
                      lora_r=16, lora_alpha=32, **FAST)
    return cfg, out, train(cfg)


def test_the_curve_holds_each_checkpoints_real_scores(task_run, tiny_model_dir, tmp_path):
    """Each epoch's record and log line; one checkpoint's ROUGE-L and grounding as covertune generate and
    covertune evaluate find them for that checkpoint."""
    from covertune.stages.generate import generate
    from covertune.stages.evaluate import evaluate

    cfg, out, message = task_run
    lines = [r for r in read_log(out) if "task_eval" in r]
    assert [r["step"] for r in lines] == [2, 4, 6, 8, 10] and [r["epoch"] for r in lines] == [1, 2, 3, 4, 5]
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    sel = info["checkpoint_selection"]
    assert [r["step"] for r in sel["checkpoints"]] == [2, 4, 6, 8, 10]
    assert all(r["task"]["letters"] == 3 and r["eval_loss"] > 0 for r in sel["checkpoints"])

    # checkpoint-8's letters written by covertune generate, scored by covertune evaluate
    ckpt = out / "checkpoints" / "checkpoint-8"
    generate(GenerateConfig(model=str(tiny_model_dir), out=str(out), adapter=str(ckpt), split="validation",
                            models=["fine_tuned"], max_new_tokens=NEW_TOKENS, batch_size=2,
                            output_file="ckpt8.csv"))
    scored = tmp_path / "scores"
    evaluate(EvaluateConfig(out=str(scored), eval_csv=str(out / "ckpt8.csv"), bertscore_model="none"))
    full = json.loads((scored / "metrics.json").read_text())["subsets"]["full"]["models"]["fine_tuned"]
    recorded = next(r for r in lines if r["step"] == 8)["task_eval"]
    assert full["rougeL_f"]["mean"] > 0
    for metric in ("rougeL_f", "repetition_ratio", "unsupported_numbers", "unsupported_orgs", "length_chars"):
        assert recorded[metric] == pytest.approx(full[metric]["mean"], abs=1e-12), metric
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_adapter_is_the_chosen_checkpoint(task_run):
    cfg, out, message = task_run
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    sel = info["checkpoint_selection"]
    kept = {int(p.name.split("-")[-1]) for p in (out / "checkpoints").glob("checkpoint-*")}
    assert kept == {2, 4, 6, 8, 10}  # save_total_limit 5
    best, reason = choose(sel["checkpoints"], "task", cfg.task_grounding_margin, kept)
    assert sel["step"] == best["step"] and sel["reason"] == reason and sel["criterion"] == "task"
    assert same_weights(out / "adapter", out / "checkpoints" / f"checkpoint-{best['step']}")
    assert f"checkpoint-{best['step']}" in message
    assert rundir.stage_info(out, "train")["adapter_step"] == best["step"]
    assert info["eval_loss"] == best["eval_loss"]
    assert set(sel["by_criterion"]) == {"last", "loss", "rouge_l", "task"}


def known_scores(monkeypatch, table: dict[int, tuple[float, float]], calls: list | None = None):
    """Score checkpoint-<step> with the known (ROUGE-L, unsupported facts) of ``table``."""

    def score(ckpt, cfg, records):
        step = int(ckpt.name.split("-")[-1])
        if calls is not None:
            calls.append(step)
        rouge, facts = table[step]
        return {"letters": len(records), "rougeL_f": rouge, "repetition_ratio": 0.1,
                "unsupported_numbers": facts, "unsupported_orgs": 0.0, "unsupported_facts": facts}

    monkeypatch.setattr(checkpoint_choice, "score_checkpoint", score)


def test_an_earlier_checkpoint_survives_rotation_and_becomes_the_adapter(tiny_model_dir, short_records, tmp_path,
                                                                          monkeypatch):
    """Epoch 1 scores best: it is kept past save_total_limit 2 and its weights are the adapter's."""
    from covertune.stages.train import train

    known_scores(monkeypatch, {2: (0.40, 0.0), 4: (0.30, 0.0), 6: (0.35, 0.0), 8: (0.20, 0.0)})
    out = make_run(tmp_path, short_records)
    train(TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=4, select_checkpoint="rouge_l",
                      save_total_limit=2, **FAST))
    kept = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-2", "checkpoint-8"]
    assert same_weights(out / "adapter", out / "checkpoints" / "checkpoint-2")
    assert not same_weights(out / "adapter", out / "checkpoints" / "checkpoint-8")
    sel = json.loads((out / "adapter" / "covertune_train.json").read_text())["checkpoint_selection"]
    assert sel["step"] == 2 and sel["final_step"] == 8 and sel["by_criterion"]["last"] == 8


def test_early_stopping_stops_when_the_choice_is_patience_checkpoints_old(tiny_model_dir, short_records, tmp_path,
                                                                           monkeypatch):
    from covertune.stages.train import train

    known_scores(monkeypatch, {2: (0.30, 0.0), 4: (0.40, 0.0), 6: (0.38, 0.0), 8: (0.39, 0.0), 10: (0.5, 0.0)})
    out = make_run(tmp_path, short_records)
    message = train(TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=5, select_checkpoint="task",
                                early_stopping_patience=2, **FAST))
    assert "8 steps" in message  # stopped after epoch 4: epoch 2 stayed best for 2 checkpoints
    sel = json.loads((out / "adapter" / "covertune_train.json").read_text())["checkpoint_selection"]
    assert sel["stopped_early_at"] == 8 and sel["step"] == 4
    assert max(r["step"] for r in read_log(out) if "loss" in r) == 8


def test_a_continued_run_scores_only_new_checkpoints(tiny_model_dir, short_records, tmp_path, monkeypatch):
    """--resume to train longer scores only the new checkpoints; changed scoring settings score the
    checkpoints still on disk again and drop the records of those gone."""
    from covertune.stages.train import train

    calls: list[int] = []
    known_scores(monkeypatch, {s: (0.1 * s, 0.0) for s in range(2, 12, 2)}, calls)
    out = make_run(tmp_path, short_records)
    common = dict(model=str(tiny_model_dir), out=str(out), select_checkpoint="task", save_total_limit=2, **FAST)
    train(TrainConfig(epochs=2, **common))
    assert calls == [2, 4]
    train(TrainConfig(epochs=3, resume=True, **common))
    assert calls == [2, 4, 6]  # checkpoints 2 and 4 kept their scores
    records = checkpoint_choice.read_records(out / "checkpoints")
    assert [r["step"] for r in records] == [2, 4, 6] and all(r.get("task") for r in records)

    train(TrainConfig(epochs=4, resume=True, **{**common, "task_eval_rows": 2}))  # other scoring settings
    assert calls == [2, 4, 6, 4, 6, 8]  # checkpoint-2 is gone (rotation); 4 and 6 are scored again
    records = checkpoint_choice.read_records(out / "checkpoints")
    assert [r["step"] for r in records if r.get("task")] == [4, 6, 8]
    assert all(r["task_eval_settings"]["rows"] == 2 for r in records if r.get("task"))
    lines = [r for r in read_log(out) if "task_eval" in r]
    assert [r["step"] for r in lines] == [4, 6, 8]  # the stale lines went


@pytest.mark.parametrize("args, expected", [
    (["--select-checkpoint", "task", "--save-strategy", "no"], "select_checkpoint task chooses among checkpoints"),
    (["--select-checkpoint", "loss", "--eval-strategy", "no"], "select_checkpoint loss needs the validation loss"),
    (["--early-stopping-patience", "2"], "early_stopping_patience stops on the chosen checkpoint's criterion"),
    (["--select-checkpoint", "task", "--task-eval-rows", "-1"], "task_eval_rows must be >= 0"),
    (["--select-checkpoint", "task", "--task-grounding-margin", "-0.1"], "task_grounding_margin must be >= 0"),
    (["--select-checkpoint", "rouge_l", "--task-eval-max-new-tokens", "0"], "task_eval_max_new_tokens must be >= 1"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, expected):
    from covertune.cli import main

    assert main(["train", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_bad_values_in_a_config_file(tmp_path):
    with pytest.raises(ValueError, match="option 'select_checkpoint' expects one of last, loss, rouge_l, task, got 'best'"):
        build("train", {"train": {"select_checkpoint": "best"}})
    with pytest.raises(ValueError, match="option 'early_stopping_patience' expects an integer"):
        build("train", {"train": {"early_stopping_patience": "soon"}})


def test_no_validation_rows_is_an_error(tiny_model_dir, short_records, tmp_path):
    from covertune.stages.train import train

    io.write_jsonl(tmp_path / "data" / "train.jsonl", short_records[:4])
    io.write_jsonl(tmp_path / "data" / "validation.jsonl", [])
    with pytest.raises(ValueError, match="select_checkpoint rouge_l chooses by the validation split"):
        train(TrainConfig(model=str(tiny_model_dir), out=str(tmp_path), select_checkpoint="rouge_l", **FAST))


def test_scoring_leaves_the_training_unchanged(tiny_model_dir, short_records, tmp_path):
    """With dropout drawing random numbers at every step, a run that writes and scores letters at each
    checkpoint ends with the same weights as one that does not."""
    from covertune.stages.train import train

    common = dict(model=str(tiny_model_dir), epochs=2, lora_dropout=0.1, **FAST)
    plain, scored = make_run(tmp_path / "plain", short_records), make_run(tmp_path / "scored", short_records)
    train(TrainConfig(out=str(plain), **common))
    train(TrainConfig(out=str(scored), select_checkpoint="rouge_l", task_eval_max_new_tokens=8, **common))
    assert [r["step"] for r in read_log(scored) if "task_eval" in r] == [2, 4]
    for step in (2, 4):
        assert same_weights(plain / "checkpoints" / f"checkpoint-{step}", scored / "checkpoints" / f"checkpoint-{step}")


def test_the_model_card_says_which_checkpoint_and_why(task_run):
    cfg, out, _ = task_run
    sel = json.loads((out / "adapter" / "covertune_train.json").read_text())["checkpoint_selection"]
    card = (out / "adapter" / "README.md").read_text()
    assert "## Checkpoint choice" in card and f"checkpoint-{sel['step']} of 10 steps" in card
    assert sel["reason"] in card and f"| {sel['step']} (chosen) |" in card


def test_a_checkpoint_whose_scoring_was_cut_off_is_scored_when_the_run_continues(tiny_model_dir, short_records,
                                                                                   tmp_path, monkeypatch):
    from covertune.stages.train import train

    calls: list[int] = []
    known_scores(monkeypatch, {2: (0.3, 0.0), 4: (0.2, 0.0)}, calls)
    out = make_run(tmp_path, short_records)
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=2, select_checkpoint="rouge_l", **FAST)
    train(cfg)
    # as if the process had been killed while checkpoint-4's letters were being scored
    records = checkpoint_choice.read_records(out / "checkpoints")
    checkpoint_choice.write_records(out / "checkpoints", [r for r in records if r["step"] != 4])
    rundir.stage_marker(out, "train").unlink()
    (out / "adapter").rename(out / "adapter.old")
    calls.clear()
    train(cfg)  # the same command continues the run
    assert calls == [4]
    sel = json.loads((out / "adapter" / "covertune_train.json").read_text())["checkpoint_selection"]
    assert [r["step"] for r in sel["checkpoints"]] == [2, 4] and sel["step"] == 2
    assert same_weights(out / "adapter", out / "checkpoints" / "checkpoint-2")
