"""covertune prefer on a tiny random Llama (CPU, fp32): the pair rule on constructed candidates, pairs from
the training split only, the margin moved by preference training, resume, atomic outputs and errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from covertune import cli
from covertune.core import io, rundir
from covertune.models import load as models
from covertune.config.stages import PreferConfig
from covertune.config.build import build
from covertune.stages.prefer import completion_logps, encode_pairs, make_pair, mean_margin, prefer, train_on_pairs
from covertune.core.records import from_source_row, inputs_of
from covertune.generation.select import grounding_failures

FAKE = " With 17 years of experience at Initech Corporation, I delivered 42 projects."


@pytest.fixture(scope="module")
def grounded_rows(dataset_dir):
    """Real training rows whose short letter passes the grounding check with name and company in it."""
    frame = pd.read_csv(dataset_dir / "train.csv", dtype=str, keep_default_na=False)
    rows = []
    for n, src in enumerate(frame.to_dict("records")):
        r = from_source_row(src)
        r.update(id=f"train-{n}", flags=[], missing_fields=[])
        if len(r["cover_letter"]) < 600 and not grounding_failures(r["cover_letter"], inputs_of(r)):
            rows.append(r)
    assert len(rows) >= 10
    return rows


def _insert(letter: str, text: str) -> str:
    """``text`` after the letter's first sentence."""
    cut = letter.index(". ") + 1
    return letter[:cut] + text + letter[cut:]


# ---------------------------------------------------------------- the pair rule


def test_chosen_is_the_best_grounded_candidate_and_rejected_invents(grounded_rows):
    row = grounded_rows[0]
    truth = row["cover_letter"]
    invented = _insert(truth, FAKE)
    shorter = truth[: len(truth) // 2] + " " + truth.split("\n")[-1]  # grounded, further from the letter
    no_name = truth.replace(row["applicant_name"], "the applicant")
    assert not grounding_failures(shorter, inputs_of(row)), "the shortened letter must still pass"
    pair = make_pair(row, [shorter, no_name, invented, truth])
    assert pair["chosen"] == truth and pair["chosen_from"] == 3  # the grounded one nearest the training letter
    assert pair["rejected"] == invented and pair["rejected_index"] == 2
    assert "unsupported number: 17" in pair["rejected_failures"]
    assert any(f.startswith("unsupported organisation") for f in pair["rejected_failures"])
    assert pair["candidates"][1]["failures"] == ["applicant name missing"]

    # among several inventing candidates, the one closest to the chosen letter
    far = _insert(shorter, FAKE)
    assert make_pair(row, [far, shorter, invented])["rejected"] == far  # chosen: shorter; far is shorter + FAKE
    assert make_pair(row, [far, truth, invented])["rejected"] == invented


def test_rows_without_a_pair_say_why(grounded_rows):
    row = grounded_rows[1]
    truth = row["cover_letter"]
    invented = _insert(truth, FAKE)
    no_name = truth.replace(row["applicant_name"], "the applicant")
    assert make_pair(row, [invented, no_name])["skip"] == "no candidate passes the grounding check"
    fallback = make_pair(row, [invented, no_name], chosen_fallback="ground_truth")
    assert fallback["chosen"] == truth and fallback["chosen_from"] == "ground_truth" and fallback["rejected"] == invented
    assert make_pair(row, [truth, no_name])["skip"] == "no candidate with invented facts"
    anyway = make_pair(row, [truth, no_name], reject="any")
    assert anyway["rejected"] == no_name and anyway["rejected_failures"] == ["applicant name missing"]
    # a training letter with an invented fact is no fallback
    bad_truth = {**row, "cover_letter": invented}
    assert "does not either" in make_pair(bad_truth, [invented, no_name], chosen_fallback="ground_truth")["skip"]


def test_a_body_only_letter_excuses_the_missing_name(grounded_rows):
    """Where the training letter itself has no name (a body-only letter), a candidate is not failed for lacking
    it: the pairs are about facts, not the letter's form."""
    row = dict(grounded_rows[2])
    body = row["cover_letter"].replace(row["applicant_name"], "").strip()
    row["cover_letter"] = body
    assert "applicant name missing" in grounding_failures(body, inputs_of(row))
    pair = make_pair(row, [_insert(body, FAKE), body])
    assert pair["chosen"] == body and pair["excused"] == ["applicant name missing"]


# ---------------------------------------------------------------- a run directory


def _split(rows, prefix):
    return [{**r, "id": f"{prefix}-{n}"} for n, r in enumerate(rows)]


@pytest.fixture(scope="module")
def run(tiny_model_dir, grounded_rows, make_tiny_adapter, tmp_path_factory):
    """A run directory: 8 training rows (one sharing its inputs with a validation row), validation, test,
    and an SFT adapter (r=4, not quantized) on the tiny model."""
    out = tmp_path_factory.mktemp("prefer-run")
    train = [dict(r) for r in grounded_rows[:7]]
    validation, test = [dict(r) for r in grounded_rows[7:9]], [dict(r) for r in grounded_rows[9:10]]
    leaked = {**validation[0], "id": "train-leak"}  # same inputs as a validation row
    io.write_jsonl(out / "data" / "train.jsonl", [*train, leaked])
    io.write_jsonl(out / "data" / "validation.jsonl", _split(validation, "validation"))
    io.write_jsonl(out / "data" / "test.jsonl", _split(test, "test"))
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="none")
    return out


def _cfg(model_dir, out, **kw) -> PreferConfig:
    base = dict(model=str(model_dir), out=str(out), candidates=2, max_new_tokens=12, sample_batch_size=3,
                reject="any", chosen_fallback="ground_truth", batch_size=2, epochs=1, max_length=512,
                compute_dtype="fp32", logging_steps=1, learning_rate=1e-3)
    return PreferConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def preferred(run, tiny_model_dir):
    cfg = _cfg(tiny_model_dir, run)
    return cfg, prefer(cfg)


def test_pairs_come_from_the_training_split_only(preferred, run):
    _, message = preferred
    assert "preference_adapter" in message
    pairs = io.read_jsonl(run / "preference" / "pairs.jsonl")
    train_ids = {r["id"] for r in io.read_jsonl(run / "data" / "train.jsonl")}
    held = {r["id"] for s in ("validation", "test") for r in io.read_jsonl(run / "data" / f"{s}.jsonl")}
    assert pairs and {p["id"] for p in pairs} <= train_ids - {"train-leak"}
    assert not {p["id"] for p in pairs} & held
    summary = json.loads((run / "preference" / "summary.json").read_text())
    assert summary["split"] == "train" and summary["held_out_overlap_skipped"] == 1
    assert summary["rows_sampled"] == 7 and summary["pairs"] == len(pairs)
    journal = io.read_jsonl(run / ".prefer" / "samples.jsonl")[1:]
    assert sorted(r["id"] for r in journal) == sorted(train_ids - {"train-leak"})
    choices = {c["id"]: c for c in io.read_jsonl(run / "preference" / "choices.jsonl")}
    assert sorted(choices) == sorted(train_ids - {"train-leak"})
    for row in journal:
        assert len(row["letters"]) == 2  # the SFT model's own letters, K of them
        assert [c["letter"] for c in choices[row["id"]]["candidates"]] == row["letters"]
    for pair in pairs:
        rejected = next(c for c in choices[pair["id"]]["candidates"] if c["letter"] == pair["rejected"])
        assert rejected["failures"] == pair["rejected_failures"] and rejected["failures"]


def test_the_preference_adapter_is_written_whole_and_used_by_generate(preferred, run, tiny_model_dir):
    from covertune.config.stages import GenerateConfig
    from covertune.stages.generate import generate

    target = run / "preference_adapter"
    assert (target / "adapter_config.json").exists() and (target / "adapter_model.safetensors").exists()
    assert not (target / "ref").exists()  # only the trained adapter, not TRL's frozen reference copy
    assert not [p for p in run.iterdir() if p.name.startswith(".preference_adapter")]  # no temporary folder left
    info = json.loads((target / "covertune_train.json").read_text())
    assert info["prompt_format"] == "raw" and info["quantization"] == "none"
    assert info["preference"]["loss"] == "dpo" and info["preference"]["pairs"] >= 2
    assert info["preference"]["base_quantization"] == "none"
    assert "--adapter RUN/preference_adapter" in (target / "README.md").read_text()
    generate(GenerateConfig(model=str(tiny_model_dir), out=str(run), adapter=str(target), split="validation",
                            models=["fine_tuned"], max_new_tokens=6, batch_size=2, dtype="fp32", limit=2))
    info = rundir.stage_info(run, "generate")
    assert info["rows"] == 2 and info["split"] == "validation"


def test_rerun_is_skipped_and_other_settings_are_refused(preferred, run, tiny_model_dir):
    cfg, _ = preferred
    assert "skipped" in prefer(cfg)
    with pytest.raises(rundir.StaleStage, match="beta 0.1 -> 0.3"):
        prefer(dataclasses.replace(cfg, beta=0.3))


def test_sampling_resumes_and_stale_samples_are_not_reused(run, tiny_model_dir, tmp_path):
    """The samples journal keeps finished rows: a later call samples only the rest; a change of a sampling
    setting or of the adapter samples every row again."""
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    for name in ("train", "validation", "test"):
        (out / "data" / f"{name}.jsonl").write_bytes((run / "data" / f"{name}.jsonl").read_bytes())
    import shutil

    shutil.copytree(run / "adapter", out / "adapter")
    from covertune.stages.prefer import sample_pairs

    train_rows = rundir.read_split(out, "train")
    first, _, s1 = sample_pairs(_cfg(tiny_model_dir, out, max_pairs=2), out, out / "adapter", train_rows)
    assert len(first) == 2 and s1["this_session"]["prompts_sampled"] == 3  # one batch of 3 prompts held 2 pairs
    journal = {r["id"]: r for r in io.read_jsonl(out / ".prefer" / "samples.jsonl")[1:]}
    every, _, s2 = sample_pairs(_cfg(tiny_model_dir, out), out, out / "adapter", train_rows)
    assert s2["this_session"]["prompts_sampled"] == 4 and s2["rows_sampled"] == 7  # only the other 4
    again = {r["id"]: r for r in io.read_jsonl(out / ".prefer" / "samples.jsonl")[1:]}
    assert all(again[k]["letters"] == journal[k]["letters"] for k in journal)  # kept, not redone
    # another pair rule is applied to the samples kept: nothing sampled again, other pairs
    strict, _, s_rule = sample_pairs(_cfg(tiny_model_dir, out, reject="invented", chosen_fallback="none"), out,
                                     out / "adapter", train_rows)
    assert s_rule["this_session"]["prompts_sampled"] == 0 and s_rule["rows_sampled"] == 7
    assert len(every) > 0 and len(strict) == 0  # no letter of the tiny model names the applicant: none is chosen
    _, _, s3 = sample_pairs(_cfg(tiny_model_dir, out, temperature=1.3), out, out / "adapter", train_rows)
    assert s3["this_session"]["prompts_sampled"] == 7  # another sampling setting: all afresh
    weights = out / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: v * 1.5 for k, v in tensors.items()}, weights)
    _, _, s4 = sample_pairs(_cfg(tiny_model_dir, out, temperature=1.3), out, out / "adapter", train_rows)
    assert s4["this_session"]["prompts_sampled"] == 7  # another adapter: all afresh


# ---------------------------------------------------------------- training moves the margin


def test_preference_training_raises_the_margin_against_a_frozen_sft_reference(tiny_model_dir, grounded_rows,
                                                                                make_tiny_adapter, tmp_path):
    """DPO on pairs (training letter chosen, the same letter with invented facts rejected) raises the
    chosen-minus-rejected log-probability margin, measured before and after; TRL's reference is a frozen
    copy of the SFT adapter, and the trained adapter is the SFT adapter itself, moved."""
    from peft import PeftModel

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter", quantization="none")
    rows = grounded_rows[:6]
    pairs = [{"id": r["id"], "chosen": r["cover_letter"], "rejected": _insert(r["cover_letter"], FAKE)} for r in rows]
    tok = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    encoded = encode_pairs(pairs, {r["id"]: r for r in rows}, tok, "raw", 1024)
    assert len(encoded) == 6
    base = models.load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok)
    model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    sft = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    before = mean_margin(model, encoded)
    cfg = _cfg(tiny_model_dir, tmp_path, learning_rate=5e-3, epochs=4, batch_size=2, warmup_ratio=0.0)
    trainer = train_on_pairs(model, tok, encoded, cfg, tmp_path / "work", tmp_path / "log.jsonl")
    after = mean_margin(model, encoded)
    assert trainer.state.global_step == 12
    print(f"chosen-minus-rejected margin on the pairs: {before:.3f} -> {after:.3f}")
    assert after > before + 1.0, (before, after)
    state = model.state_dict()
    ref = {k.replace(".ref.", ".default."): v for k, v in state.items() if ".ref." in k}
    assert ref and all(torch.equal(ref[k], sft[k]) for k in sft)  # the reference: the SFT adapter, untouched
    assert any(not torch.equal(state[k], sft[k]) for k in sft)  # the adapter trained: the SFT one, moved
    logged = [r for r in io.read_jsonl(tmp_path / "log.jsonl") if "loss" in r]
    assert len(logged) == 12 and logged[-1]["rewards/margins"] > logged[0]["rewards/margins"]


def test_completion_logps_sum_the_letter_tokens_log_probabilities(tiny_model_dir):
    tok = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok)
    row = {"prompt_ids": [5, 9, 17, 3], "chosen_ids": [21, 8, 40], "rejected_ids": [7, 7]}
    (chosen, rejected), = completion_logps(model, [row, row][:1])
    for ids, value in ((row["chosen_ids"], chosen), (row["rejected_ids"], rejected)):
        full = torch.tensor([row["prompt_ids"] + ids])
        labels = full.clone()
        labels[0, :len(row["prompt_ids"])] = -100
        with torch.no_grad():
            loss = model(input_ids=full, labels=labels).loss  # the mean NLL of the letter tokens
        assert value == pytest.approx(-loss.item() * len(ids), rel=1e-4)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("argv, message", [
    (["--candidates", "1"], "candidates must be >= 2, got 1"),
    (["--beta", "0"], "beta must be > 0, got 0"),
    (["--lr-scheduler", "sideways"], "lr_scheduler must be one of transformers' schedules"),
])
def test_bad_options_are_one_line_errors(argv, message, tmp_path, capsys):
    assert cli.main(["prefer", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_bad_loss_in_yaml_and_a_missing_adapter_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="option 'loss' expects one of dpo, ipo, rpo, got 'kto'"):
        build("prefer", {"prefer": {"loss": "kto"}})
    assert cli.main(["prefer", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no PEFT adapter at" in err and len(err.splitlines()) == 1


def test_no_pairs_is_an_error_that_says_what_to_do(run, tiny_model_dir, tmp_path, capsys):
    """The tiny model's letters name no fact at all: with the defaults (reject invented, no fallback) no row
    gives a pair, and the stage says so in one line, counting the rows by reason."""
    out = tmp_path / "run"
    import shutil

    shutil.copytree(run / "data", out / "data")
    shutil.copytree(run / "adapter", out / "adapter")
    argv = ["prefer", "--model", str(tiny_model_dir), "--out", str(out), "--candidates", "2", "--max-new-tokens", "8",
            "--compute-dtype", "fp32"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "no preference pairs" in err and "--chosen-fallback ground_truth" in err and len(err.splitlines()) == 1
    assert not (out / "preference_adapter").exists()


def test_run_includes_the_stage_when_configured(tmp_path):
    from covertune.stages.pipeline import pipeline_configs, switch

    layers = [{"out": "runs/p", "prefer": {"beta": 0.2, "candidates": 6}}]
    layers, on = switch(layers, "prefer", None)
    configs = pipeline_configs(layers, prefer=on)
    assert on and configs["prefer"].beta == 0.2 and configs["prefer"].candidates == 6
    assert configs["generate"].adapter == str(Path("runs/p") / "preference_adapter")
    layers, on = switch([{"out": "runs/p"}], "prefer", None)
    assert not on and "prefer" not in pipeline_configs(layers) and pipeline_configs(layers)["generate"].adapter == ""
    assert switch([{"prefer": True}], "prefer", None)[1] and not switch([{"prefer": {}}], "prefer", False)[1]


def test_an_nf4_sft_adapter_is_trained_on_the_nf4_base(run, tiny_model_dir, make_tiny_adapter, tmp_path):
    """An adapter trained on an NF4 base (QLoRA, train's default) continues training on that base, and its
    preference adapter keeps the record generate reads to apply it to the same base."""
    pytest.importorskip("bitsandbytes")
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run / "data", out / "data")
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="nf4")
    prefer(_cfg(tiny_model_dir, out, max_pairs=2, compute_dtype="fp32"))
    info = json.loads((out / "preference_adapter" / "covertune_train.json").read_text())
    assert info["quantization"] == "nf4" and info["preference"]["pairs_trained"] == 2
    assert info["preference"]["base_quantization"] == "nf4"  # the base as loaded for training


def test_a_trl_without_its_log_probability_kernel_is_a_one_line_error(run, tiny_model_dir, monkeypatch, capsys):
    """TRL 1.15 on a machine without Triton has no way to compute DPO's log-probabilities: said before any
    model loads, not as a traceback at the first step."""
    from trl.trainer import utils as trl_utils

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", None)
    assert cli.main(["prefer", "--model", str(tiny_model_dir), "--out", str(run), "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Triton" in err and "trl>=1.16" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("loss, checkpointing", [("dpo", True), ("ipo", False), ("rpo", False)])
def test_each_loss_reaches_trl(loss, checkpointing, tiny_model_dir, grounded_rows, make_tiny_adapter, tmp_path):
    """The first step's loss, where the policy still equals its reference: DPO's sigmoid loss is log 2, IPO's
    is (1 / (2 beta))^2, and RPO adds the chosen letter's mean negative log-likelihood to DPO's."""
    import math

    from peft import PeftModel

    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter", quantization="none")
    rows = grounded_rows[:2]
    pairs = [{"id": r["id"], "chosen": r["cover_letter"], "rejected": _insert(r["cover_letter"], FAKE)} for r in rows]
    tok = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    encoded = encode_pairs(pairs, {r["id"]: r for r in rows}, tok, "raw", 1024)
    model = PeftModel.from_pretrained(models.load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok),
                                      str(adapter), is_trainable=True)
    cfg = _cfg(tiny_model_dir, tmp_path, loss=loss, beta=0.1, max_steps=1, gradient_checkpointing=checkpointing)
    train_on_pairs(model, tok, encoded, cfg, tmp_path / "work", tmp_path / "log.jsonl")
    first = next(r for r in io.read_jsonl(tmp_path / "log.jsonl") if "loss" in r)["loss"]
    expected = {"dpo": math.log(2), "ipo": (1 / (2 * 0.1)) ** 2}
    if loss in expected:
        assert first == pytest.approx(expected[loss], rel=1e-4)
    else:
        assert first > math.log(2) + 1.0  # the NLL of a random model's letter tokens is several nats each
