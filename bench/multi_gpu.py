#!/usr/bin/env python
"""covertune train and generate on N GPUs against one, through the real commands, in one call.

Parts (``--parts``, in this order; each run is a ``covertune`` command in its own processes, one process
per GPU through torch.distributed.run, NVLink multicast kept off in every child):

- ``setup``: the data stage on ``--data`` into ``<work>/run``; random bf16 models of the shapes the
  parts below need, built on the GPU and saved under ``<work>/model-<shape>`` (once); the embedded BPE cut
  to a 32,000-token vocabulary (``bench/train_7b.py tokenizer``) unless ``--tokenizer`` is given.
- ``ddp``: a Llama-2-7B-shaped model (NF4 QLoRA, the train stage's defaults, micro-batch 8, 16 rows per
  optimizer step) on 1 GPU, then DDP on N GPUs with the same global batch (micro-batch 8 x 2
  accumulation on one GPU, 8 x 1 on each of two): tokens/s over the steps after ``--warmup``, and the
  speed-up (target: >= 1.8x on 2 GPUs).
- ``fsdp``: the same model and batch under FSDP-QLoRA (``--distributed fsdp``) on N GPUs: every
  process's peak GPU memory while loading and while training, against the one-GPU run of ``ddp``
  (which holds the whole model), and tokens/s.
- ``big``: the ``--big-shape`` model (13b: Llama-2-13B's shape; 34b: CodeLlama-34B's, whose NF4 base
  alone exceeds 16 GiB) trained ``--big-steps`` steps on one GPU and under FSDP-QLoRA on N, with the
  memory of every process.
- ``generate``: the test split's base letters (the embedded model unless ``--gen-model``; greedy,
  ``--gen-max-new-tokens``) by ``covertune generate`` in 1 process, then in N: letters/s of the
  generation pass (the slowest process's seconds) and the speed-up (target: >= 1.8x), and whether the
  two eval.csv files are identical.

Results go to ``<out>/multi_gpu.json`` (rewritten after every run, so a call cut short keeps what it
finished) and each run's log to ``<out>/logs/``. ``--dry-run`` prints the runs without starting them;
``--tiny`` runs the same code on the CPU (gloo; tiny shapes, no quantization, the FSDP runs skipped: FSDP
needs CUDA).

    # the lent 2-GPU machine (nvidia-h200-x2), after `source scripts/gpu_env.sh`:
    python3 bench/multi_gpu.py --work /tmp/mg --data .gpu/c/data --tokenizer .gpu/tok --gpus 2 \\
        --parts setup ddp fsdp --out $OUT/mg
    python3 bench/multi_gpu.py --work /tmp/mg --data .gpu/c/data --tokenizer .gpu/tok --gpus 2 \\
        --parts setup big generate --out $OUT/mg2
    # on the CPU, the same code on tiny shapes:
    python bench/multi_gpu.py --tiny --work /tmp/mg-tiny --data ../shared/data/cover-letter-dataset --out /tmp/mg-out
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from train_7b import SHAPES, VOCAB, window  # noqa: E402  (shapes: Llama-2-shaped 7b, 13b, 34b, tiny)

PARTS = ("setup", "ddp", "fsdp", "big", "generate")
# NVLink multicast off in every child, whatever the caller's environment says (docs: gpu.md)
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
# the training recipe of every run: the train stage's defaults, timed steps without saving or validation
TRAIN = ["--batch-size", "8", "--logging-steps", "1", "--warmup-ratio", "0", "--save-strategy", "no",
         "--eval-strategy", "no", "--max-length", "768"]
TINY_TRAIN = ["--quantization", "none", "--compute-dtype", "fp32", "--batch-size", "2", "--max-length", "512"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="working folder: run directories and model folders (kept)")
    ap.add_argument("--out", required=True, help="folder for multi_gpu.json and the runs' logs")
    ap.add_argument("--data", default="", help="the cover-letter dataset (for setup's data stage)")
    ap.add_argument("--tokenizer", default="", help="a 32k-vocabulary tokenizer folder (default: cut from the "
                    "embedded model's, into <work>/tok)")
    ap.add_argument("--gpus", type=int, default=2, help="N: processes of the multi-GPU runs (one per GPU)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps of each 7B run")
    ap.add_argument("--warmup", type=int, default=4, help="first steps left out of tokens/s")
    ap.add_argument("--big-shape", default="13b", choices=("13b", "34b"))
    ap.add_argument("--big-steps", type=int, default=4)
    ap.add_argument("--gen-model", default="embedded", help="model of the generate part")
    ap.add_argument("--gen-batch-size", type=int, default=64)
    ap.add_argument("--gen-max-new-tokens", type=int, default=512)
    ap.add_argument("--gen-limit", type=int, default=0, help="first N test rows only (0: all)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (gloo), FSDP skipped")
    ap.add_argument("--dry-run", action="store_true", help="print the runs, start nothing")
    args = ap.parse_args(argv)
    if args.gpus < 2:
        ap.error("--gpus must be at least 2 (the runs compare N processes with one)")
    if args.warmup >= args.steps:
        ap.error("--warmup must be below --steps")
    if "setup" in args.parts and not args.data and not Path(args.work, "run", "data", "test.jsonl").exists():
        ap.error(f"--parts setup needs --data (no data stage in {args.work}/run yet)")
    return args


# ---------------------------------------------------------------- commands


def child_env() -> dict:
    """The caller's environment (never cleared) with NVLink multicast forced off and unbuffered output."""
    env = dict(os.environ)
    env.update(MULTICAST_OFF)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def command(processes: int, args: list[str]) -> list[str]:
    """``covertune args`` in one process, or in ``processes`` through torch.distributed.run."""
    from covertune.core.distributed import launch_command

    return launch_command(processes, args) if processes > 1 else [sys.executable, "-m", "covertune", *args]


def model_dir(work: Path, shape: str) -> Path:
    return work / f"model-{shape}"


def train_runs(args) -> list[dict]:
    """The training runs the parts ask for: name, processes, covertune arguments."""
    work, n = Path(args.work), args.gpus
    shape7, big = ("tiny", "tiny") if args.tiny else ("7b", args.big_shape)
    extra = TINY_TRAIN if args.tiny else []
    runs = []

    def run(name, processes, shape, steps, *options):
        out = work / "runs" / name
        cli = ["train", "--model", str(model_dir(work, shape)), "--out", str(out), "--max-steps", str(steps),
               *TRAIN, *extra, *options]
        runs.append({"name": name, "part": name.split("_")[0], "processes": processes, "out": str(out),
                     "shape": shape, "command": command(processes, cli)})

    # one GPU: 8 x 2 per step; N GPUs: 8 x 2/N each (covertune divides the accumulation among them)
    if "ddp" in args.parts or "fsdp" in args.parts:
        run("ddp_1gpu", 1, shape7, args.steps, "--grad-accum", str(n))
    if "ddp" in args.parts:
        run(f"ddp_{n}gpu", n, shape7, args.steps, "--grad-accum", str(n))
    if "fsdp" in args.parts:
        run(f"fsdp_{n}gpu", n, shape7, args.steps, "--grad-accum", str(n), "--distributed", "fsdp")
    if "big" in args.parts:
        run("big_1gpu", 1, big, args.big_steps, "--grad-accum", str(n))
        run(f"big_fsdp_{n}gpu", n, big, args.big_steps, "--grad-accum", str(n), "--distributed", "fsdp")
    for r in runs:
        if args.tiny and "--distributed" in r["command"]:
            r["skip"] = "FSDP needs CUDA GPUs (--tiny runs on the CPU)"
    return runs


def generate_runs(args) -> list[dict]:
    if "generate" not in args.parts:
        return []
    work = Path(args.work)
    model = str(model_dir(work, "tiny")) if args.tiny and args.gen_model == "embedded" else args.gen_model
    runs = []
    for processes in (1, args.gpus):
        out = work / "runs" / f"generate_{processes}gpu"
        cli = ["generate", "--model", model, "--out", str(out), "--models", "base", "--batch-size",
               str(args.gen_batch_size), "--max-new-tokens", str(args.gen_max_new_tokens), "--force"]
        if args.gen_limit:
            cli += ["--limit", str(args.gen_limit)]
        runs.append({"name": f"generate_{processes}gpu", "part": "generate", "processes": processes, "out": str(out),
                     "command": command(processes, cli)})
    return runs


def shapes_needed(args) -> list[str]:
    if args.tiny:
        return ["tiny"] if set(args.parts) & {"ddp", "fsdp", "big", "generate"} else []
    need = []
    if set(args.parts) & {"ddp", "fsdp"}:
        need.append("7b")
    if "big" in args.parts:
        need.append(args.big_shape)
    return need


# ---------------------------------------------------------------- setup


def setup(args, results: dict) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from covertune.core import io
    from covertune.models import load as models

    work = Path(args.work)
    run = work / "run"
    if not (run / "data" / "test.jsonl").exists():
        proc = subprocess.run(command(1, ["data", "--data", args.data, "--out", str(run)]), env=child_env(),
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"the data stage failed: {proc.stderr[-2000:]}")
    tok_dir = Path(args.tokenizer) if args.tokenizer else work / "tok"
    if not (tok_dir / "tokenizer.json").exists():
        from train_7b import cut_tokenizer

        cut_tokenizer(tok_dir, VOCAB)
    tok = models.load_tokenizer(str(tok_dir))
    built = {}
    for shape in shapes_needed(args):
        target = model_dir(work, shape)
        if (target / "config.json").exists():
            continue
        cfg = LlamaConfig(**SHAPES[shape], vocab_size=VOCAB, max_position_embeddings=4096,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
        t0 = time.perf_counter()
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: a 34B shape in fp32 fills a GPU
        try:
            with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(default)
        params = sum(p.numel() for p in model.parameters())
        with io.atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        built[shape] = {"parameters": params, "build_and_save_s": round(time.perf_counter() - t0, 1)}
    results["setup"] = {**results.get("setup", {}), **built, "tokenizer": str(tok_dir)}


def copy_data(work: Path, out: Path) -> None:
    (out / "data").mkdir(parents=True, exist_ok=True)
    for f in (work / "run" / "data").glob("*.jsonl"):
        shutil.copyfile(f, out / "data" / f.name)


# ---------------------------------------------------------------- one run and its figures


def execute(run: dict, args, logs: Path) -> dict:
    work = Path(args.work)
    out = Path(run["out"])
    shutil.rmtree(out, ignore_errors=True)
    copy_data(work, out)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(run["command"], env=child_env(), capture_output=True, text=True, timeout=args.timeout)
        code, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code = -9
        text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr))
        text += f"\ntimed out after {args.timeout} s"
    wall = round(time.perf_counter() - t0, 1)
    (logs / f"{run['name']}.txt").write_text(" ".join(run["command"]) + "\n\n" + text)
    res = {"name": run["name"], "processes": run["processes"], "command": " ".join(run["command"][1:]),
           "process_wall_s": wall}
    if code != 0:
        return {**res, "error": f"exit {code}: {text[-1500:]}"}
    if run["part"] == "generate":
        stats = json.loads((out / "generate_stats.json").read_text())["base"]
        return {**res, **{k: stats.get(k) for k in ("letters", "new_tokens", "seconds", "letters_per_s",
                                                    "tokens_per_s", "device", "per_process")}}
    info = json.loads((out / "adapter" / "covertune_train.json").read_text())
    speed = info["speed"]
    return {**res, "shape": run["shape"], **window(out / "train_log.jsonl", args.warmup), "batch": info["batch"],
            "distributed": info["distributed_resolved"], "device": speed.get("device"),
            "memory": {k: v for k, v in speed.items() if "memory" in k or k == "per_process"}}


def summary(results: dict, n: int) -> dict:
    """The ratios the targets are stated in."""
    runs = results["runs"]

    def tps(name):
        return (runs.get(name) or {}).get("tokens_per_s")

    out = {}
    if tps("ddp_1gpu") and tps(f"ddp_{n}gpu"):
        out["ddp_speedup"] = round(tps(f"ddp_{n}gpu") / tps("ddp_1gpu"), 3)
    if tps("ddp_1gpu") and tps(f"fsdp_{n}gpu"):
        out["fsdp_speedup"] = round(tps(f"fsdp_{n}gpu") / tps("ddp_1gpu"), 3)
    g1, gn = runs.get("generate_1gpu") or {}, runs.get(f"generate_{n}gpu") or {}
    if g1.get("seconds") and gn.get("seconds"):
        out["generate_speedup"] = round(g1["seconds"] / gn["seconds"], 3)
        out["generate_wall_speedup"] = round(g1["process_wall_s"] / gn["process_wall_s"], 3)
    return out


def same_eval_csv(work: Path, n: int) -> bool | None:
    a, b = (work / "runs" / f"generate_{p}gpu" / "eval.csv" for p in (1, n))
    return a.read_bytes() == b.read_bytes() if a.exists() and b.exists() else None


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = train_runs(args) + generate_runs(args)
    if args.dry_run:
        plan = {"setup": "setup" in args.parts, "shapes": shapes_needed(args), "env": MULTICAST_OFF,
                "runs": [{"name": r["name"], "processes": r["processes"], "command": " ".join(r["command"]),
                          **({"skip": r["skip"]} if "skip" in r else {})} for r in runs]}
        print(json.dumps(plan, indent=1))
        return 0
    import torch

    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = out / "multi_gpu.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"gpus": args.gpus, "tiny": args.tiny, "versions": versions(), "env": MULTICAST_OFF,
                    "cards": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                    if torch.cuda.is_available() else ["cpu"]})
    results.setdefault("runs", {})

    def save():
        results["summary"] = summary(results, args.gpus)
        results["generate_same_eval_csv"] = same_eval_csv(Path(args.work), args.gpus)
        path.write_text(json.dumps(results, indent=1))

    if "setup" in args.parts:
        setup(args, results)
        save()
    for run in runs:
        if "skip" in run:
            results["runs"][run["name"]] = {"name": run["name"], "skipped": run["skip"]}
            continue
        print(f"--- {run['name']}: {' '.join(run['command'])}", flush=True)
        results["runs"][run["name"]] = res = execute(run, args, logs)
        print(json.dumps(res)[:1500], flush=True)
        save()
    save()
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
