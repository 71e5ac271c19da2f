#!/usr/bin/env python
"""Training throughput and peak GPU memory at Llama-2-7B scale, through covertune's train stage.

The model is Llama-2-7B-shaped (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000)
with random bf16 weights built on the GPU and saved once to a local folder, so that every recipe
loads it the way a user's model loads (quantized by bitsandbytes at load time). Speed does not depend
on the weights' values. The tokenizer is the embedded model's BPE cut to its first 32,000 tokens
(``tokenizer`` below), a stand-in for Llama-2's, so the sequences have the real train split's length
distribution under a 32k vocabulary.

Each recipe runs in its own process (clean peak-memory counters) through ``covertune.stages.train.train``
with ``max_steps`` set; the measured window skips the first ``--warmup`` optimizer steps. Peers:
TRL's SFTTrainer (PEFT + bitsandbytes) and Unsloth, with the same model, data and LoRA settings.

    python bench/train_7b.py tokenizer --out .gpu/tok                 # here, once (needs the embedded model)
    python bench/train_7b.py setup --work /tmp/b7 --tokenizer .gpu/tok --data .gpu/c/data
    python bench/train_7b.py run --work /tmp/b7 --steps 10 --warmup 3 --rounds 3 --json $OUT/bench_train_7b.json \\
        --recipes reference covertune trl unsloth

Results: docs/PERFORMANCE.md. ``--shape tiny`` runs the same code on a small model (CPU-testable).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

VOCAB = 32000
SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40),
    "34b": dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=48, num_attention_heads=64,
                num_key_value_heads=8),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4),
}
# shared by every recipe; the train stage's defaults fill in the rest
COMMON = dict(lora_r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], max_length=768,
              optimizer="paged_adamw_32bit", warmup_ratio=0.0, eval_strategy="no", save_strategy="no",
              logging_steps=1)


def recipe(quantization, dtype, batch, accum, checkpointing, grouped, liger, upcast, dropout=0.0, packed=False,
           **extra) -> dict:
    return dict(quantization=quantization, compute_dtype=dtype, batch_size=batch, grad_accum=accum,
                gradient_checkpointing=checkpointing, group_by_length=grouped, liger_kernel=liger,
                fp32_upcast=upcast, lora_dropout=dropout, padding_free="on" if packed else "off", **extra)


# name -> TrainConfig fields on top of COMMON. "covertune" is the train stage's defaults; "reference" is
# the reference run's recipe (LLM.int8 base, fp16, batch 1 x 4, checkpointing, right padding, LoRA dropout
# 0.05, lr 2e-4, loss on the whole sequence); the others change one lever at a time ("packed":
# padding-free batches, covertune.training.padding_free).
RECIPES = {
    "covertune": {},
    "covertune_padded": {"padding_free": "off"},
    "reference": recipe("int8", "fp16", 1, 4, True, False, "off", True, 0.05, loss_on="all", learning_rate=2e-4),
    "nf4_b1x4_gc": recipe("nf4", "bf16", 1, 4, True, False, "off", True, 0.05),
    "nf4_b16_gc_grouped": recipe("nf4", "bf16", 16, 1, True, True, "off", True, 0.05),
    "nf4_b16_gc_grouped_liger": recipe("nf4", "bf16", 16, 1, True, True, "on", True, 0.05),
    "nf4_b16_gc_grouped_liger_noupcast": recipe("nf4", "bf16", 16, 1, True, True, "on", False, 0.05),
    "nf4_b16_gc_grouped_liger_noupcast_dropout0": recipe("nf4", "bf16", 16, 1, True, True, "on", False),
    "nf4_b32_gc_grouped_liger_noupcast_dropout0": recipe("nf4", "bf16", 32, 1, True, True, "on", False),
    "nf4_b16_nogc_grouped_liger_noupcast_dropout0": recipe("nf4", "bf16", 16, 1, False, True, "on", False),
    "bf16_b16_nogc_grouped_liger_dropout0": recipe("none", "bf16", 16, 1, False, True, "on", False),
    "bf16_b16_nogc_grouped_compile_dropout0": recipe("none", "bf16", 16, 1, False, True, "off", False,
                                                     torch_compile=True),
    "bf16_b16_nogc_grouped_liger_compile_dropout0": recipe("none", "bf16", 16, 1, False, True, "on", False,
                                                           torch_compile=True),
    "bf16_b16_nogc_grouped_liger_packed_dropout0": recipe("none", "bf16", 16, 1, False, True, "on", False,
                                                          packed=True),
    "bf16_b24_nogc_grouped_liger_packed_dropout0": recipe("none", "bf16", 24, 1, False, True, "on", False,
                                                          packed=True),
    "bf16_b16_nogc_grouped_liger_packed_compile_dropout0": recipe("none", "bf16", 16, 1, False, True, "on", False,
                                                                  packed=True, torch_compile=True),
}
# the peers run with the covertune recipe's batch, checkpointing, sampler, LoRA dropout and NF4 base
PEER_BASIS = {"trl": "covertune", "unsloth": "covertune"}


def recipe_config(name: str, **fields):
    """The TrainConfig a recipe name stands for (the stage's defaults under COMMON and the recipe)."""
    from covertune.config.stages import TrainConfig

    return TrainConfig(**{**COMMON, **RECIPES[name], **fields})


# ------------------------------------------------------------------------------ setup


def cut_tokenizer(out: Path, vocab: int = VOCAB) -> None:
    """The embedded model's byte-level BPE with only its first ``vocab`` tokens and the merges that
    build them: a valid tokenizer (every text still encodes) with a Llama-2-sized vocabulary."""
    from covertune.models import load as models

    src = models.resolve_model("embedded")
    spec = json.loads((Path(src) / "tokenizer.json").read_text())
    bpe = spec["model"]
    keep = {t: i for t, i in bpe["vocab"].items() if i < vocab}
    merges = []
    for m in bpe["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in keep and b in keep and (a + b) in keep:
            merges.append(m)
    bpe["vocab"], bpe["merges"] = keep, merges
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < vocab]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (Path(src) / name).exists():
            (out / name).write_text((Path(src) / name).read_text())
    tok = models.load_tokenizer(str(out))
    assert len(tok) <= vocab, len(tok)
    print(f"tokenizer: {len(keep)} tokens, {len(merges)} merges -> {out}")


def measured_bf16_tflops() -> float:
    import torch
    import triton.testing

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = triton.testing.do_bench(lambda: a @ b, warmup=200, rep=1000, return_mode="median")
    return 2 * 8192 ** 3 / (ms / 1e3) / 1e12


def varlen_check(lengths: list[int], heads: int = 32, dim: int = 128) -> dict:
    """The padding-free attention's fused kernel against SDPA run once per example (covertune.training.padding_free),
    forward and input gradients, in bf16 on one packed micro-batch of real example lengths."""
    import torch

    from covertune.training import padding_free

    if not padding_free.kernel_available():
        return {"kernel": None}
    torch.manual_seed(0)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device="cuda")
    qkv = [torch.randn(cu[-1].item(), heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
           for _ in range(3)]
    grad = torch.randn_like(qkv[0])
    results = []
    for fn in (lambda *t: padding_free._fused(*t, cu, max(lengths), dim ** -0.5),
               lambda *t: padding_free._per_example(*t, cu, dim ** -0.5)):
        out = fn(*qkv)
        results.append([out.float(), *(g.float() for g in torch.autograd.grad(out, qkv, grad))])
    diff = [(a - b).abs().max().item() for a, b in zip(*results)]
    scale = [b.abs().max().item() for b in results[1]]
    return {"kernel": "torch.nn.attention.varlen.varlen_attn", "examples": len(lengths), "tokens": int(cu[-1]),
            "max_abs_diff_out_dq_dk_dv": [round(d, 5) for d in diff], "max_abs_ref": [round(x, 3) for x in scale]}


def setup(args) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from covertune.core import io
    from covertune.models import load as models
    from covertune.config.stages import DataConfig
    from covertune.stages.data import run_data
    from covertune.training.sft_data import encode_records
    from covertune.core.rundir import read_split

    work = Path(args.work)
    run = work / "run"
    print(run_data(DataConfig(data=args.data, out=str(run))), flush=True)
    tok = models.load_tokenizer(args.tokenizer)
    cuda = torch.cuda.is_available()
    cfg = LlamaConfig(**SHAPES[args.shape], vocab_size=VOCAB, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    n_all = sum(p.numel() for p in model.parameters())
    n_matmul = n_all - model.get_input_embeddings().weight.numel()
    with io.atomic_dir(work / "model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    del model
    build_s = time.perf_counter() - t0

    # the reference job: 4 epochs over the 813 train rows (here the data stage's train + validation,
    # 807 after deduplication: their mean length x 813), loss on every token
    rows = read_split(run, "train") + read_split(run, "validation")
    ref = recipe_config("reference")
    enc = encode_records(rows, tok, ref.max_length, ref.prompt_format, ref.loss_on, "train")
    lengths = [len(e["input_ids"]) for e in enc.examples]
    info = {"shape": args.shape, "parameters": n_all, "matmul_parameters": n_matmul,
            "model_flops_per_token": 4 * n_matmul, "model_build_and_save_s": round(build_s, 1),
            "tokenizer": "embedded BPE cut to 32,000 tokens (bench/train_7b.py tokenizer)",
            "reference_job": {"rows": 813, "epochs": 4, "rows_here": len(lengths),
                              "tokens_per_epoch": round(813 * statistics.mean(lengths)),
                              "mean_length": round(statistics.mean(lengths), 1), "max_length": max(lengths),
                              "letters_cut_at_768": len(enc.truncated)}}
    if cuda:
        info["device"] = torch.cuda.get_device_name(0)
        info["measured_bf16_tflops"] = round(measured_bf16_tflops(), 1)
        info["padding_free_check"] = varlen_check(lengths[:16])
    io.write_json(work / "setup.json", info)
    print(json.dumps(info, indent=1))


# ------------------------------------------------------------------------------ one recipe


def copy_splits(work: Path, out: Path) -> None:
    """The data stage's splits (``<work>/run/data/*.jsonl``) into the run directory ``out``."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    for f in (work / "run" / "data").glob("*.jsonl"):
        shutil.copyfile(f, out / "data" / f.name)


def window(log_path: Path, warmup: int) -> dict:
    """Tokens/s over the optimizer steps after the first ``warmup`` (from train_log.jsonl)."""
    from covertune.core import io

    rows = io.read_jsonl(log_path)
    steps = [r for r in rows if "interval_tokens" in r and r["step"] > warmup]
    tokens = sum(r["interval_tokens"] for r in steps)
    secs = sum(r["interval_seconds"] for r in steps)
    return {"steps_timed": len(steps), "tokens_timed": tokens, "seconds_timed": round(secs, 2),
            "tokens_per_s": round(tokens / secs, 1) if secs else None,
            "final_loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None)}


def peak_memory() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def run_recipe(args) -> dict:
    from covertune.config.build import to_dict
    from covertune.stages.train import train

    work = Path(args.work)
    out = work / "runs" / args.name
    copy_splits(work, out)
    cfg = recipe_config(args.name, model=str(work / "model"), out=str(out), max_steps=args.steps, force=True)
    t0 = time.perf_counter()
    print(train(cfg), flush=True)
    levers = ("quantization", "compute_dtype", "batch_size", "grad_accum", "gradient_checkpointing",
              "group_by_length", "liger_kernel", "fp32_upcast", "lora_dropout", "loss_on", "learning_rate",
              "padding_free", "torch_compile")
    result = {"recipe": args.name, "config": {k: v for k, v in to_dict(cfg).items() if k in levers},
              "stage_wall_s": round(time.perf_counter() - t0, 1),
              **window(out / "train_log.jsonl", args.warmup), **peak_memory()}
    return result


# ------------------------------------------------------------------------------ peers


def peer_data(work: Path):
    """The train split as prompt/completion text (what TRL and Unsloth users feed SFTTrainer)."""
    from covertune.core.prompt import LETTER_SEPARATOR, format_prompt
    from covertune.training.sft_data import letter_of
    from covertune.core.rundir import read_split

    rows = read_split(work / "run", "train")
    return [{"prompt": format_prompt(r), "completion": LETTER_SEPARATOR + letter_of(r)} for r in rows]


def run_peer(args) -> dict:
    """TRL SFTTrainer + PEFT + bitsandbytes, or Unsloth's FastLanguageModel + TRL, on the basis recipe's
    batch, checkpointing and NF4 base."""
    import torch

    work = Path(args.work)
    from covertune.config.build import to_dict

    basis = to_dict(recipe_config(PEER_BASIS[args.name]))
    out = work / "runs" / args.name
    model_dir = str(work / "model")
    unsloth = args.name.startswith("unsloth")
    if unsloth:
        import unsloth as _unsloth  # noqa: F401  (patches transformers/trl before they load)
        from unsloth import FastLanguageModel
    import datasets
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from covertune.training.train_log import JsonlLogger

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(model_dir)
    lora = dict(r=basis["lora_r"], lora_alpha=basis["lora_alpha"], lora_dropout=basis["lora_dropout"],
                target_modules=basis["target_modules"], bias="none")
    peft_config = None
    if unsloth:
        model, tok = FastLanguageModel.from_pretrained(model_dir, max_seq_length=basis["max_length"],
                                                       load_in_4bit=True, dtype=torch.bfloat16)
        model = FastLanguageModel.get_peft_model(
            model, **lora, use_gradient_checkpointing="unsloth" if basis["gradient_checkpointing"] else False,
            random_state=0)
    else:
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=q, dtype=torch.bfloat16,
                                                     device_map={"": 0 if torch.cuda.is_available() else "cpu"})
        peft_config = LoraConfig(**lora, task_type="CAUSAL_LM")
    data = datasets.Dataset.from_list(peer_data(work))
    logger = JsonlLogger(out / "train_log.jsonl")
    (out / "train_log.jsonl").unlink(missing_ok=True)
    sft = trl.SFTConfig(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=basis["batch_size"],
        gradient_accumulation_steps=basis["grad_accum"], max_steps=args.steps, learning_rate=basis["learning_rate"],
        optim=basis["optimizer"], bf16=True, logging_steps=1, save_strategy="no", report_to="none",
        max_length=basis["max_length"], use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=basis["gradient_checkpointing"] and not unsloth,
        train_sampling_strategy="group_by_length" if basis["group_by_length"] else "random",
        include_num_input_tokens_seen="non_padding", seed=42)
    trainer = trl.SFTTrainer(model=model, args=sft, train_dataset=data, processing_class=tok,
                             peft_config=peft_config, callbacks=[logger])
    trainer.train()
    return {"recipe": args.name, "basis": PEER_BASIS[args.name], "versions": {"trl": trl.__version__,
            **({"unsloth": _unsloth.__version__} if unsloth else {})},
            "stage_wall_s": round(time.perf_counter() - t0, 1), **window(out / "train_log.jsonl", args.warmup),
            **peak_memory()}


# ------------------------------------------------------------------------------ driver


def child(args) -> None:
    result_path = Path(args.result)
    try:
        result = run_peer(args) if args.name in PEER_BASIS else run_recipe(args)
    except Exception as e:  # recorded, so that one failing recipe does not sink the others
        traceback.print_exc()
        result = {"recipe": args.name, "error": f"{type(e).__name__}: {e}"[:2000], **peak_memory()}
    result_path.write_text(json.dumps(result, indent=1))


def run_one(name: str, args, work: Path) -> dict:
    """One recipe in its own process; its result, or the error it died with."""
    res_path = work / f"result_{name}.json"
    res_path.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "_child", name, "--work", str(work), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--result", str(res_path)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as e:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        proc = subprocess.CompletedProcess(cmd, -9, text(e.stdout), text(e.stderr) + f"\ntimed out after {args.timeout} s")
    with open(work / f"log_{name}.txt", "a") as f:
        f.write(proc.stdout + proc.stderr)
    res = (json.loads(res_path.read_text()) if res_path.exists()
           else {"recipe": name, "error": f"exit {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}"})
    res["process_wall_s"] = round(time.perf_counter() - t0, 1)
    if res.get("error"):
        print((proc.stdout + proc.stderr)[-3000:], flush=True)
    return res


def combine(runs: list[dict], setup_info: dict) -> dict:
    """A recipe's rounds as one entry: the median round's figures (lower middle), every round's tokens/s,
    the highest peak memory; MFU and the reference job's estimate from the median tokens/s."""
    ok = sorted((r for r in runs if r.get("tokens_per_s")), key=lambda r: r["tokens_per_s"])
    if not ok:
        return {**runs[-1], "rounds": len(runs)}
    res = dict(ok[(len(ok) - 1) // 2])
    res["rounds"] = len(runs)
    res["tokens_per_s_rounds"] = [r.get("tokens_per_s") for r in runs]
    for key in ("peak_allocated_gib", "peak_reserved_gib"):
        if any(key in r for r in ok):
            res[key] = max(r.get(key, 0) for r in ok)
    tps, rate = res["tokens_per_s"], setup_info.get("measured_bf16_tflops")
    flops = setup_info["model_flops_per_token"]
    res["model_tflops"] = round(tps * flops / 1e12, 1)
    if rate:
        res["mfu"] = round(tps * flops / 1e12 / rate, 3)
    res["reference_job_train_s_estimate"] = round(setup_info["reference_job"]["tokens_per_epoch"] * 4 / tps)
    return res


def drive(args) -> None:
    """Runs each recipe in its own process, ``--rounds`` times in turn (so that no recipe owns the
    first-use compilation of shared kernels, and noise shows), merging into --json after each run."""
    from covertune.core import io

    work = Path(args.work)
    for name in args.recipes:
        if name not in RECIPES and name not in PEER_BASIS:
            raise SystemExit(f"unknown recipe {name!r}; known: {', '.join([*RECIPES, *PEER_BASIS])}")
    setup_info = json.loads((work / "setup.json").read_text())
    out = Path(args.json)
    results = json.loads(out.read_text()) if out.exists() else {"recipes": {}}
    results["setup"] = setup_info
    runs: dict[str, list[dict]] = {name: [] for name in args.recipes}
    for _ in range(args.rounds):
        for name in args.recipes:
            runs[name].append(run_one(name, args, work))
            results["recipes"][name] = res = combine(runs[name], setup_info)
            ref = results["recipes"].get("reference", {}).get("tokens_per_s")
            for r in results["recipes"].values():
                if ref and r.get("tokens_per_s"):
                    r["speedup_vs_reference"] = round(r["tokens_per_s"] / ref, 2)
            io.write_json(out, results)
            print(json.dumps({k: v for k, v in res.items() if k != "config"}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tokenizer", help="cut the embedded tokenizer to 32,000 tokens")
    t.add_argument("--out", required=True)
    s = sub.add_parser("setup", help="data stage, random model saved to <work>/model, card's bf16 rate")
    s.add_argument("--work", required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--data", required=True, help="the cover-letter dataset (folder with train.csv, test.csv)")
    s.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    r = sub.add_parser("run", help="run recipes, each in its own process")
    r.add_argument("--work", required=True)
    r.add_argument("--recipes", nargs="+", default=["reference", "covertune"])
    r.add_argument("--steps", type=int, default=10)
    r.add_argument("--warmup", type=int, default=3)
    r.add_argument("--rounds", type=int, default=1, help="run the recipe list this many times in turn; "
                   "each recipe reports its median round")
    r.add_argument("--timeout", type=int, default=900)
    r.add_argument("--json", required=True)
    c = sub.add_parser("_child")
    c.add_argument("name")
    c.add_argument("--work", required=True)
    c.add_argument("--steps", type=int, required=True)
    c.add_argument("--warmup", type=int, required=True)
    c.add_argument("--result", required=True)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    {"tokenizer": lambda a: cut_tokenizer(Path(a.out)), "setup": setup, "run": drive, "_child": child}[args.cmd](args)


if __name__ == "__main__":
    main()
