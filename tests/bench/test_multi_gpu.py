"""bench/multi_gpu.py's CPU-runnable parts: its arguments, the runs it plans, the environment of its
children and the figures it derives (the GPU figures come from the same code on 2 GPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import multi_gpu  # noqa: E402


def plan(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / "multi_gpu.py"), "--dry-run", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_dry_run_plans_one_gpu_against_n(tmp_path):
    p = plan("--work", str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--gpus", "2",
             "--parts", "ddp", "fsdp", "big", "generate", "--big-shape", "34b")
    runs = {r["name"]: r for r in p["runs"]}
    assert list(runs) == ["ddp_1gpu", "ddp_2gpu", "fsdp_2gpu", "big_1gpu", "big_fsdp_2gpu", "generate_1gpu",
                          "generate_2gpu"]
    assert p["shapes"] == ["7b", "34b"] and p["setup"] is False
    for name, r in runs.items():
        launched = "torch.distributed.run --standalone --nproc-per-node=2 -m covertune" in r["command"]
        assert launched == (r["processes"] == 2), name
    # the same global batch on 1 and 2 GPUs: 16 rows per step, covertune shares the accumulation
    assert "--batch-size 8" in runs["ddp_1gpu"]["command"] and "--grad-accum 2" in runs["ddp_1gpu"]["command"]
    assert runs["ddp_2gpu"]["command"].split("--out")[1].split()[1:] == \
        runs["ddp_1gpu"]["command"].split("--out")[1].split()[1:]
    assert "--distributed fsdp" in runs["fsdp_2gpu"]["command"] and "--distributed fsdp" in runs["big_fsdp_2gpu"]["command"]
    assert "model-34b" in runs["big_1gpu"]["command"] and "model-7b" in runs["ddp_1gpu"]["command"]
    assert "--model embedded" in runs["generate_2gpu"]["command"] and "--models base" in runs["generate_2gpu"]["command"]
    assert p["env"] == multi_gpu.MULTICAST_OFF


def test_tiny_mode_skips_fsdp_on_the_cpu(tmp_path):
    p = plan("--tiny", "--work", str(tmp_path), "--out", str(tmp_path / "o"), "--parts", "ddp", "fsdp")
    runs = {r["name"]: r for r in p["runs"]}
    assert "skip" in runs["fsdp_2gpu"] and "skip" not in runs["ddp_2gpu"]
    assert "--quantization none" in runs["ddp_1gpu"]["command"] and p["shapes"] == ["tiny"]


@pytest.mark.parametrize("argv, message", [
    (["--gpus", "1"], "--gpus must be at least 2"),
    (["--steps", "4", "--warmup", "4"], "--warmup must be below --steps"),
    (["--parts", "setup"], "--parts setup needs --data"),
])
def test_bad_arguments(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, str(BENCH / "multi_gpu.py"), "--work", str(tmp_path), "--out",
                           str(tmp_path), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr


def test_children_keep_the_environment_with_multicast_off(monkeypatch):
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")  # forced back off
    monkeypatch.setenv("SOME_USER_SETTING", "kept")
    env = multi_gpu.child_env()
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert env["NVSHMEM_DISABLE_NVLS"] == "1" and env["SOME_USER_SETTING"] == "kept"


def test_window_and_summary(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s, "interval_tokens": 1000, "interval_seconds": 0.5 if s > 1 else 5.0}
            for s in (1, 2, 3)]
    log.write_text("\n".join(json.dumps(r) for r in rows))
    w = multi_gpu.window(log, warmup=1)  # the slow first step is left out
    assert w["steps_timed"] == 2 and w["tokens_per_s"] == 2000.0 and w["final_loss"] == pytest.approx(1 / 3)
    results = {"runs": {"ddp_1gpu": {"tokens_per_s": 1000.0}, "ddp_2gpu": {"tokens_per_s": 1900.0},
                        "fsdp_2gpu": {"error": "exit 1"},
                        "generate_1gpu": {"seconds": 10.0, "process_wall_s": 30.0},
                        "generate_2gpu": {"seconds": 5.0, "process_wall_s": 20.0}}}
    assert multi_gpu.summary(results, 2) == {"ddp_speedup": 1.9, "generate_speedup": 2.0,
                                             "generate_wall_speedup": 1.5}
