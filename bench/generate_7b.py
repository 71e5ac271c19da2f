#!/usr/bin/env python
"""Generation throughput of the evaluation stage at Llama-2-7B scale (random weights, built on the GPU).

Compares the reference's loop (one prompt at a time) with the batching covertune's generate uses
(prompts sorted by length, left-padded, large batches), and, with --engines, covertune's generation
engines (covertune.generation.engines: plain, static, continuous) on the same prompts, each timed twice in turn
(the first pass of ``static`` and ``continuous`` includes compiling and capturing CUDA graphs). Every
row generates exactly --new-tokens tokens (no stop token can end it: random weights would otherwise stop
at random), so tokens/s compare like for like. Prompt lengths are the 349 test prompts' token counts
under the embedded model's tokenizer (bench/lengths.json), a stand-in for Llama-2's tokenizer.

    python bench/generate_7b.py --new-tokens 128 --ref-prompts 6 --batches 32 64 128
    python bench/generate_7b.py --new-tokens 128 --ref-prompts 0 --batches --engines plain static continuous \
        --engine-batch 128
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True python bench/generate_7b.py --new-tokens 128 --ref-prompts 0 \
        --batches --engine-runs plain:128 static:349 static:175 --passes 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama2_7b() -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return model.eval()


def run(model, lengths: list[int], batch: int, new_tokens: int, gen: torch.Generator) -> float:
    """Seconds to generate new_tokens for every prompt, in sorted left-padded batches."""
    order = sorted(lengths, reverse=True)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        chunk = order[start:start + batch]
        width = max(chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, n in enumerate(chunk):
            ids[row, width - n:] = torch.randint(3, 32000, (n,), generator=gen)
            mask[row, width - n:] = 1
        with torch.inference_mode():
            model.generate(input_ids=ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=2)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def prompt_ids(lengths: list[int], seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 32000, (n,), generator=gen).tolist() for n in lengths]


def run_engine(model, engine: str, prompts: list[list[int]], batch: int, new_tokens: int) -> dict:
    """One pass of covertune's engine over every prompt (sorted by length, as generate does)."""
    from unittest import mock

    from covertune.generation import engines

    engine, _, caches = engine.partition("@")  # static@1: one static cache for the run (the path before)
    with mock.patch.object(engines, "STATIC_MAX_CACHES", int(caches) if caches else engines.STATIC_MAX_CACHES):
        return _run_engine(model, engine, prompts, batch, new_tokens)


def _run_engine(model, engine: str, prompts: list[list[int]], batch: int, new_tokens: int) -> dict:
    from covertune.generation import engines
    from covertune.generation.decoding import Decoding

    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    batches = ((order[s:s + batch], [prompts[i] for i in order[s:s + batch]]) for s in range(0, len(order), batch))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    got = {}
    for idx, rows in engines.generate_batches(model, batches, engine=engine, stop=[-1], pad=0,
                                              decoding=Decoding(max_new_tokens=new_tokens), batch_size=batch,
                                              max_prompt_tokens=max(len(p) for p in prompts)):
        got.update(zip(idx, rows))
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tokens = sum(len(r) for r in got.values())
    if len(got) != len(prompts) or tokens != len(prompts) * new_tokens:
        raise RuntimeError(f"{engine}: {len(got)} rows, {tokens} tokens (expected {len(prompts) * new_tokens})")
    return {"seconds_349": round(secs, 2), "tokens": tokens, "tokens_per_s": round(tokens / secs, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--ref-prompts", type=int, default=6, help="prompts timed one at a time (after one warm-up)")
    ap.add_argument("--batches", type=int, nargs="*", default=[32, 64, 128])
    ap.add_argument("--engines", nargs="*", default=[], help="covertune engines to time: plain static continuous")
    ap.add_argument("--engine-batch", type=int, nargs="+", default=[128],
                    help="batch sizes for --engines (each engine at each batch)")
    ap.add_argument("--engine-runs", nargs="+", default=[], metavar="ENGINE:BATCH",
                    help="instead of --engines x --engine-batch: these (engine, batch) pairs, every pass in "
                         "turn; static@N: at most N static caches per pass (static@1: one, sized for the "
                         "longest prompt, as before caches followed the batches)")
    ap.add_argument("--passes", type=int, default=2, help="passes per engine, taken in turn")
    ap.add_argument("--out", default="bench_generate_7b.json")
    args = ap.parse_args()
    # every (batch, cache length) is a compiled decoding step; dynamo's default limit would turn later ones eager
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    lengths = json.loads((Path(__file__).parent / "lengths.json").read_text())["test_prompt_tokens"]
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model = llama2_7b()
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
               "transformers": __import__("transformers").__version__, "new_tokens": args.new_tokens,
               "prompts": len(lengths), "model_build_s": round(time.perf_counter() - t0, 1)}
    run(model, lengths[:1], 1, 8, gen)  # warm-up
    ref_tps = None
    if args.ref_prompts:
        secs = run(model, lengths[1:1 + args.ref_prompts], 1, args.new_tokens, gen)
        ref_tps = args.ref_prompts * args.new_tokens / secs
        results["reference_loop"] = {"batch": 1, "prompts_timed": args.ref_prompts,
                                     "tokens_per_s": round(ref_tps, 1),
                                     "eval_698_letters_s_estimate": round(698 * args.new_tokens / ref_tps, 1)}
        print(json.dumps(results["reference_loop"]), flush=True)
    for b in args.batches:
        torch.cuda.reset_peak_memory_stats()
        secs = run(model, lengths, b, args.new_tokens, gen)
        tps = len(lengths) * args.new_tokens / secs
        results[f"batched_{b}"] = {"batch": b, "seconds_349": round(secs, 1), "tokens_per_s": round(tps, 1),
                                   "speedup_vs_reference_loop": round(tps / ref_tps, 1) if ref_tps else None,
                                   "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}
        print(json.dumps(results[f"batched_{b}"]), flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    prompts = prompt_ids(lengths)
    runs = [(int(b), e) for e, b in (r.split(":") for r in args.engine_runs)] if args.engine_runs else None
    for group in ([runs] if runs else [[(eb, e) for e in args.engines] for eb in args.engine_batch]):
        for n in range(args.passes):
            for eb, engine in group:
                key = f"engine_{engine}_b{eb}"
                try:
                    r = run_engine(model, engine, prompts, eb, args.new_tokens)
                except Exception as e:  # one engine failing must not lose the others' figures
                    r = {"error": f"{type(e).__name__}: {e}"[:2000]}
                    torch.cuda.empty_cache()
                results.setdefault(key, {"engine": engine, "batch": eb, "passes": []})["passes"].append(r)
                print(json.dumps({key: r}), flush=True)
                Path(args.out).write_text(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
