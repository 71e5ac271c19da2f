"""bench/levers_gpu.sh and bench/levers_final.sh end to end on the CPU with a tiny random Llama: the variants'
candidates, the sweep's choice as `covertune run --set` options, and the chosen setting run through
`covertune run --preset smol` from the chosen variant's outputs."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import DATASET_DIR

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (DATASET_DIR / "train.csv").exists(), reason="needs the shared dataset")


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # python3 = this interpreter
    env["PYTHONPATH"] = str(ROOT / "src")
    env.update(extra)
    return env


def test_levers_choose_a_variant_and_the_final_run_reuses_its_adapter(tiny_model_dir, tmp_path):
    tiny = str(tiny_model_dir)
    root, out = tmp_path / "lev", tmp_path / "out"
    env = _env(DATA_ARGS=f"--model {tiny}", TRAIN_ARGS=f"--model {tiny} --max-steps 2", GEN_ARGS=f"--model {tiny} --max-new-tokens 8",
               VARIANTS="base ungrounded", MAXJ="2", WORKERS="2", DEADLINE="600")
    done = subprocess.run(["bash", "bench/levers_gpu.sh", str(DATASET_DIR), str(root), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    steps = (out / "steps.log").read_text()
    assert done.returncode == 0, steps + done.stderr[-2000:]
    assert "base: done" in steps and "ungrounded: done" in steps
    # the ungrounded variant trained without the letters the data stage flagged as ungrounded
    flagged = sum(any(f["flag"] == "ungrounded" for f in json.loads(line)["flags"])
                  for line in (root / "base" / "data" / "train.jsonl").read_text().splitlines())
    assert flagged > 0 and "--drop-flags ungrounded" in steps
    sweep = json.loads((out / "candidate_sweep.json").read_text())
    keys = {(r["variant"], r["candidates"], r["repetition_weight"]) for r in sweep["rows"]}
    assert {("base", 1, 0.0), ("base", 16, 0.0), ("ungrounded", 12, 1.0), ("ungrounded", 16, 0.0)} <= keys
    chosen = sweep["chosen"]
    sets = (out / "chosen.sets").read_text().split()
    assert f"generate.candidates={chosen['candidates']}" in sets
    assert ("train.drop_flags=ungrounded" in sets) == (chosen["variant"] == "ungrounded")

    # the final run: the chosen setting through `covertune run --preset smol`, started from the variant's run
    (tmp_path / "chosen.sets").write_text(f"--model {tiny} --set train.max_steps=2 --set generate.limit=3 "
                                          f"--set generate.max_new_tokens=8 " + " ".join(sets))
    final = tmp_path / "final"
    done = subprocess.run(["bash", "bench/levers_final.sh", str(DATASET_DIR), str(final), str(out / "final"),
                           str(tmp_path / "chosen.sets"), str(root / chosen["variant"]), str(root / "base")],
                          cwd=ROOT, env=_env(PROFILE="0"), capture_output=True, text=True, timeout=900)
    steps = (out / "final" / "steps.log").read_text()
    assert done.returncode == 0 and "run rc=0" in steps, steps + done.stderr[-2000:]
    assert pd.read_csv(out / "final" / "eval.csv").shape[0] == 3
    # the run took the variant's adapter (its fingerprint matched) instead of training again
    assert "starting over" not in steps
    assert "adapter is complete; skipped" in (out / "final" / "run.log").read_text()
    assert (final / "adapter" / "adapter_model.safetensors").read_bytes() == (
        root / chosen["variant"] / "adapter" / "adapter_model.safetensors").read_bytes()


def test_levers_round_picks_a_winner_by_its_rule_and_writes_its_test_candidates(tiny_model_dir, tmp_path):
    """bench/levers_round.sh: every variant's validation and test candidates, the shipped rule's figures per
    variant, and the winner by the rule fixed in the script (base unless another beats it by the margin)."""
    tiny = str(tiny_model_dir)
    root, out = tmp_path / "lev", tmp_path / "out"
    env = _env(DATA_ARGS=f"--model {tiny}", TRAIN_ARGS=f"--model {tiny} --max-steps 2",
               GEN_ARGS=f"--model {tiny} --max-new-tokens 8 --limit 4", VARIANTS="base ungrounded", MAXJ="2",
               DEADLINE="600", SHIPPED="", MARGIN="-1")  # any variant with no more invented facts may win
    done = subprocess.run(["bash", "bench/levers_round.sh", str(DATASET_DIR), str(root), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    steps = (out / "steps.log").read_text() + (out / "round_steps.log").read_text()
    assert done.returncode == 0, steps + done.stderr[-2000:]
    assert "no sweep (SWEEP=0)" in steps
    won = json.loads((out / "winner.json").read_text())
    # the winner's test candidates (none when base stays)
    assert (out / "test_cands_base.jsonl.gz").exists() is False
    if won["winner"] != "base":
        rows = [json.loads(line) for line in gzip.open(out / f"test_cands_{won['winner']}.jsonl.gz", "rt")]
        assert len(rows) == 4 and all(len(r["candidates"]) == 16 for r in rows)
    assert set(won["figures"]) == {"base", "ungrounded"} and won["rule"] == "grounded-mbr+skills:0.2"
    f = won["figures"]
    ok = [v for v in f if f[v]["letters_with_unsupported_numbers"] <= f["base"]["letters_with_unsupported_numbers"]
          and f[v]["letters_with_unsupported_orgs"] == 0]
    best = max(ok, key=lambda v: f[v]["rouge_l"])
    assert won["best"] == best
    assert won["winner"] == (best if f[best]["rouge_l"] >= f["base"]["rouge_l"] + won["margin"] else "base")
    assert (out / "winner_adapter" / "adapter_model.safetensors").read_bytes() == (
        root / won["winner"] / "adapter" / "adapter_model.safetensors").read_bytes()
