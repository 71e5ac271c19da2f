"""train and generate in two processes (torch.distributed.run, gloo on the CPU) against one process.

Each run is a real ``covertune`` command in subprocesses on a tiny random Llama: DDP training with the
same global batch gives the single process's loss curve and adapter (tolerance: 1e-4 relative on the
losses, 1e-5 absolute on the adapter's weights: the two runs add the same gradients in another order);
split generation gives the same eval.csv; one process writes the outputs; both resume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from covertune.core import distributed, io

ROOT = Path(__file__).resolve().parents[2]
LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-5


def covertune(*args: str, processes: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    """``covertune args`` in one process, or in ``processes`` through torch.distributed.run."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WORLD_SIZE", None)
    if processes > 1:
        cmd = distributed.launch_command(processes, args)
    else:
        cmd = [sys.executable, "-m", "covertune", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    return proc


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout


@pytest.fixture(scope="module")
def rows(dataset_dir, tiny_model_dir, make_short_records):
    """Real rows, letters shortened, whose prompts are short under the tiny tokenizer."""
    out = make_short_records(dataset_dir, tiny_model_dir, 80, 200, 300, "row")
    assert len(out) >= 42
    return out


def make_run(root: Path, rows: list[dict]) -> Path:
    """40 train rows: enough for batches grouped by length to depend on the rows per step they are
    grouped over (the global batch, not one process's share)."""
    io.write_jsonl(root / "data" / "train.jsonl", rows[:40])
    io.write_jsonl(root / "data" / "validation.jsonl", rows[40:42])
    io.write_jsonl(root / "data" / "test.jsonl", rows[:6])
    return root


def train_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--out", str(out), "--quantization", "none", "--compute-dtype", "fp32",
            "--batch-size", "2", "--grad-accum", "2", "--max-length", "384", "--learning-rate", "1e-2",
            "--lr-scheduler", "constant", "--warmup-ratio", "0", "--target-modules", "all-linear",
            "--logging-steps", "1", "--save-strategy", "steps", "--save-steps", "2", "--eval-strategy", "no",
            "--seed", "0", *extra]


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in io.read_jsonl(out / "train_log.jsonl") if "loss" in r]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def trained(rows, tiny_model_dir, tmp_path_factory):
    """4 optimizer steps of 4 rows: one process (2 x 2 accumulated) and two (2 rows each, no accumulation)."""
    single = make_run(tmp_path_factory.mktemp("single"), rows)
    double = make_run(tmp_path_factory.mktemp("ddp"), rows)
    ok(covertune(*train_args(tiny_model_dir, single, "--max-steps", "4")))
    message = ok(covertune(*train_args(tiny_model_dir, double, "--max-steps", "4"), processes=2))
    return single, double, message


def test_ddp_matches_one_process_with_the_same_global_batch(trained):
    single, double, message = trained
    one, two = losses(single), losses(double)
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4]  # one log line per step: one writer
    assert [l for _, l in two] == pytest.approx([l for _, l in one], rel=LOSS_RTOL)
    assert one[-1][1] < one[0][1]  # it learned something, so equal curves mean equal training
    a, b = adapter(single), adapter(double)
    assert a.keys() == b.keys() and a
    moved = 0
    for key in a:
        assert torch.allclose(a[key], b[key], atol=ADAPTER_ATOL, rtol=0), key
        moved += "lora_B" in key and bool(a[key].abs().max() > 1e-3)
    assert moved  # lora_B starts at zero: the adapters match after real updates
    info = json.loads((double / "adapter" / "covertune_train.json").read_text())
    assert info["processes"] == 2 and info["distributed_resolved"] == "ddp"
    assert info["batch"] == {"per_process_batch_size": 2, "per_process_grad_accum": 1, "processes": 2,
                             "global_batch": 4, "asked_for": 4}
    # the gathered token count is both processes' tokens: the same as one process's
    single_info = json.loads((single / "adapter" / "covertune_train.json").read_text())
    assert info["speed"]["tokens"] == single_info["speed"]["tokens"]
    assert "2 processes, ddp, global batch 4" in message


def test_one_process_writes_the_outputs(trained):
    _, double, _ = trained
    assert (double / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    marker = json.loads((double / ".stages" / "train.json").read_text())
    assert marker["global_step"] == 4
    leftovers = [p.name for p in double.iterdir() if p.name.startswith(".adapter")]
    assert leftovers == []  # no second, half-written adapter folder
    steps = sorted(int(p.name.split("-")[1]) for p in (double / "checkpoints").glob("checkpoint-*"))
    assert steps == [2, 4]
    recorded = json.loads((double / "checkpoints" / "covertune_fingerprint.json").read_text())
    assert recorded["processes"] == 2


def test_resume_with_the_same_number_of_processes(trained, rows, tiny_model_dir, tmp_path):
    """Stopped after step 2 and continued to step 4 in two processes: the straight run's curve and adapter."""
    _, double, _ = trained
    out = make_run(tmp_path / "resumed", rows)
    ok(covertune(*train_args(tiny_model_dir, out, "--max-steps", "2"), processes=2))
    # with another number of processes the checkpoints are refused, naming the count to use
    refused = covertune(*train_args(tiny_model_dir, out, "--max-steps", "4", "--resume"))
    assert refused.returncode == 2
    assert "written by 2 process(es) and this run has 1" in refused.stderr
    assert "Traceback" not in refused.stderr
    ok(covertune(*train_args(tiny_model_dir, out, "--max-steps", "4", "--resume"), processes=2))
    assert [s for s, _ in losses(out)] == [1, 2, 3, 4]
    assert [l for _, l in losses(out)] == pytest.approx([l for _, l in losses(double)], rel=LOSS_RTOL)
    a, b = adapter(out), adapter(double)
    assert all(torch.allclose(a[k], b[k], atol=ADAPTER_ATOL, rtol=0) for k in a)


def generate_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(model), "--out", str(out), "--max-new-tokens", "12", "--batch-size", "2",
            "--base-weights", "original", "--dtype", "fp32", *extra]


def test_split_generation_writes_the_eval_csv_of_one_process(rows, tiny_model_dir, make_tiny_adapter, tmp_path):
    one = make_run(tmp_path / "one", rows)
    two = make_run(tmp_path / "two", rows)
    for run in (one, two):
        make_tiny_adapter(tiny_model_dir, run / "adapter", quantization="none")
    ok(covertune(*generate_args(tiny_model_dir, one)))
    message = ok(covertune(*generate_args(tiny_model_dir, two), processes=2))
    a, b = (pd.read_csv(r / "eval.csv", keep_default_na=False) for r in (one, two))
    assert len(a) == 6 and a["fine_tuned_output"].str.len().gt(0).all()  # letters to compare, not blanks
    pd.testing.assert_frame_equal(a, b)
    stats = json.loads((two / "generate_stats.json").read_text())
    for which in ("base", "fine_tuned"):
        assert stats[which]["processes"] == 2 and stats[which]["letters"] == 6
        assert [p["letters"] for p in stats[which]["per_process"]] == [3, 3]  # each wrote its share
    assert "wrote" in message and not list((two / ".generate").glob("*.part*"))  # parts merged, then removed


def test_split_generation_resumes_from_an_interrupted_run(rows, tiny_model_dir, make_tiny_adapter, tmp_path):
    """Rows one process of an interrupted two-process run journaled are not written again; the rest are,
    and the eval.csv is the one a single uninterrupted process writes."""
    from covertune.generation.letters import part_path

    ref = make_run(tmp_path / "ref", rows)
    out = make_run(tmp_path / "out", rows)
    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter", quantization="none")
    only = ("--models", "fine_tuned", "--adapter", str(adapter))
    ok(covertune(*generate_args(tiny_model_dir, ref, *only)))
    ok(covertune(*generate_args(tiny_model_dir, out, *only, "--limit", "2")))  # a journal of rows 0 and 1
    journal = out / ".generate" / "test.fine_tuned.jsonl"
    lines = journal.read_text().splitlines()
    # as if process 1 of an interrupted run had journaled rows 0 and 1 and process 0 nothing
    part_path(journal, 1).write_text("\n".join(lines) + "\n")
    journal.unlink()
    (out / "eval.csv").unlink()
    ok(covertune(*generate_args(tiny_model_dir, out, *only), processes=2))
    stats = json.loads((out / "generate_stats.json").read_text())["fine_tuned"]
    assert stats["resumed"] == 2 and stats["letters"] == 4
    expected = pd.read_csv(ref / "eval.csv", keep_default_na=False)
    assert expected["fine_tuned_output"].str.len().gt(0).all()
    pd.testing.assert_frame_equal(expected, pd.read_csv(out / "eval.csv", keep_default_na=False))


def test_stages_that_run_in_one_process_refuse_a_launcher(tmp_path):
    proc = covertune("data", "--data", "sample", "--out", str(tmp_path / "run"), processes=2, timeout=120)
    assert proc.returncode != 0
    assert "covertune data runs in one" in proc.stderr


def test_num_gpus_shortcut():
    argv = ["train", "--out", "runs/x", "--num-gpus", "2", "--epochs", "1"]
    cmd = distributed.launch_command(2, distributed.strip_num_gpus(argv))
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "covertune",
                       "train", "--out", "runs/x", "--epochs", "1"]
    assert distributed.strip_num_gpus(["generate", "--num-gpus=4"]) == ["generate"]
    env = distributed.child_env({"PATH": "/bin", "NCCL_NVLS_ENABLE": "0"})
    assert env["PATH"] == "/bin" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1" and env["NVSHMEM_DISABLE_NVLS"] == "1"
    if not torch.cuda.is_available():
        proc = covertune("train", "--out", "runs/x", "--num-gpus", "2", timeout=120)
        assert proc.returncode == 2 and "--num-gpus 2: no CUDA GPU here" in proc.stderr
        assert "torchrun --standalone --nproc-per-node 2" in proc.stderr
    proc = covertune("evaluate", "--num-gpus", "2", timeout=120)
    assert proc.returncode == 2  # argparse: evaluate has no --num-gpus


@pytest.mark.parametrize("options, message", [
    (["--quantization", "int8"], "an int8 base cannot be sharded"),
    (["--fp32-upcast"], "drop it (--no-fp32-upcast)"),
    (["--compute-dtype", "fp16"], "use --compute-dtype bf16"),
    (["--select-checkpoint", "loss"], "select_checkpoint loss needs --distributed ddp"),
    ([], "there is none here" if not torch.cuda.is_available() else "this is the only one"),
])
def test_fsdp_options_are_checked(tmp_path, options, message):
    proc = covertune("train", "--out", str(tmp_path), "--distributed", "fsdp", *options, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_process_batch_keeps_the_global_batch():
    from covertune.training.trainer import process_batch

    assert process_batch(8, 4, 1) == (8, 4)
    assert process_batch(8, 4, 2) == (8, 2)  # accumulation shared first
    assert process_batch(8, 1, 2) == (4, 1)  # else the micro-batch
    assert process_batch(3, 1, 2) == (3, 1)  # neither divides: the global batch doubles (warned)


def test_run_sends_a_stage_to_n_processes(rows, tiny_model_dir, tmp_path, monkeypatch):
    """`covertune run --num-gpus N`'s path for train and generate: the stage's config, as built, in N processes."""
    from covertune.config.stages import GenerateConfig
    from covertune.stages.pipeline import run_in_processes

    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = make_run(tmp_path / "run", rows)
    cfg = GenerateConfig(model=str(tiny_model_dir), out=str(out), models=["base"], max_new_tokens=8, batch_size=2,
                         dtype="fp32", limit=4)
    assert run_in_processes("generate", cfg, 2) == "ran in 2 processes"
    stats = json.loads((out / "generate_stats.json").read_text())["base"]
    assert stats["processes"] == 2 and stats["letters"] == 4 and stats["max_new_tokens"] == 8
    assert len(pd.read_csv(out / "eval.csv", keep_default_na=False)) == 4
    assert not (out / ".generate-config.yaml").exists()


def test_checkpoint_choice_and_early_stopping_agree_across_processes(trained, rows, tiny_model_dir, tmp_path):
    """select_checkpoint loss with early stopping: the main process chooses and every process stops at the
    same step, the one a single process stops at, with the same checkpoint as the adapter."""
    outs = {}
    for processes in (1, 2):
        out = outs[processes] = make_run(tmp_path / f"p{processes}", rows)
        ok(covertune(*train_args(tiny_model_dir, out, "--max-steps", "8", "--learning-rate", "0.3",
                                 "--save-steps", "1", "--eval-strategy", "steps", "--eval-steps", "1",
                                 "--select-checkpoint", "loss", "--early-stopping-patience", "2",
                                 "--save-total-limit", "3"), processes=processes))
    sel = {p: json.loads((o / "adapter" / "covertune_train.json").read_text())["checkpoint_selection"]
           for p, o in outs.items()}
    assert sel[2]["stopped_early_at"] == sel[1]["stopped_early_at"] is not None  # the run stopped early
    assert sel[2]["step"] == sel[1]["step"] < sel[1]["stopped_early_at"]
    records = json.loads((outs[2] / "checkpoints" / "covertune_checkpoints.json").read_text())["checkpoints"]
    assert [r["step"] for r in records] == list(range(1, sel[2]["stopped_early_at"] + 1))  # one writer
    a, b = adapter(outs[1]), adapter(outs[2])
    assert all(torch.allclose(a[k], b[k], atol=ADAPTER_ATOL, rtol=0) for k in a)


def test_split_generation_with_candidates(rows, tiny_model_dir, make_tiny_adapter, tmp_path):
    """--candidates under two processes: every row gets its chosen letter and its choice record, once, as one
    process writes them."""
    out = make_run(tmp_path / "run", rows)
    adapter = make_tiny_adapter(tiny_model_dir, tmp_path / "adapter", quantization="none")
    ok(covertune(*generate_args(tiny_model_dir, out, "--models", "fine_tuned", "--adapter", str(adapter),
                                "--candidates", "2", "--select", "mbr"), processes=2))
    frame = pd.read_csv(out / "eval.csv", keep_default_na=False)
    assert len(frame) == 6 and frame["fine_tuned_output"].str.len().gt(0).all()
    records = io.read_jsonl(out / "candidates" / "test.fine_tuned.jsonl")
    assert [r["index"] for r in records] == list(range(6))
    stats = json.loads((out / "generate_stats.json").read_text())["fine_tuned"]
    assert [p["letters"] for p in stats["per_process"]] == [3, 3]
    # each candidate draws from its own seed: one process writes the same candidates and letters
    one = make_run(tmp_path / "one", rows)
    ok(covertune(*generate_args(tiny_model_dir, one, "--models", "fine_tuned", "--adapter", str(adapter),
                                "--candidates", "2", "--select", "mbr")))
    pd.testing.assert_frame_equal(frame, pd.read_csv(one / "eval.csv", keep_default_na=False))
    assert io.read_jsonl(one / "candidates" / "test.fine_tuned.jsonl") == records
