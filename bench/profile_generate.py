#!/usr/bin/env python
"""Where a decoding step of the embedded model goes, at the evaluation's batch (all test prompts at once).

Loads the base model (and, with --adapter, merges it in, as ``covertune generate`` does) on the GPU and runs
``model.generate`` on the run's test prompts in one left-padded batch with ``min_new_tokens`` =
``max_new_tokens`` (so no row stops early), at S and 2S new tokens; (t(2S) - t(S)) / S is the time of one
decoding step at a context between the prompt and prompt + 2S, with the prefill left out. Done for each
--variants entry:

- ``sdpa``: the model as ``covertune generate`` loads it (fp32, SDPA attention);
- ``eager``: transformers' eager attention;
- ``tf32``: sdpa with TF32 matrix products allowed;
- ``bf16``: sdpa in bf16;
- ``half-batch``: sdpa on the first half of the rows only (how the step time scales with the batch).

Then torch.profiler over S decoding steps of ``sdpa``: the CUDA kernels with the most self time, and the time
the CPU spent, so that per-step overhead and GPU work can be told apart. Written to --json.

    python bench/profile_generate.py --run runs/smol --adapter runs/smol/adapter --json profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory holding data/test.jsonl")
    ap.add_argument("--adapter", help="an adapter to merge into the base first")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--steps", type=int, default=64, help="S")
    ap.add_argument("--variants", nargs="+", default=["sdpa", "eager", "tf32", "bf16", "half-batch"])
    ap.add_argument("--json", default="profile_generate.json")
    args = ap.parse_args()

    import torch
    import transformers

    from covertune.core import io
    from covertune.models import load as models
    from covertune.core.prompt import prompt_ids

    records = io.read_jsonl(Path(args.run) / "data" / "test.jsonl")
    tok = models.load_tokenizer(args.model, padding_side="left")
    inputs = [prompt_ids(r, tok, "raw") for r in records]
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "transformers": transformers.__version__, "rows": len(inputs), "steps": args.steps,
           "prompt_tokens_max": max(map(len, inputs)), "variants": {}}

    def save():
        Path(args.json).write_text(json.dumps(out, indent=2))

    def load(dtype: str, attn: str):
        model = models.load_model(args.model, "none", dtype, tokenizer=tok, attn_implementation=attn)
        if args.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
        return model.eval()

    def batch(rows, device):
        width = max(map(len, rows))
        ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + list(r) for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        return ids, mask

    def timed(model, rows, steps):
        ids, mask = batch(rows, model.device)
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=steps,
                           min_new_tokens=steps, pad_token_id=tok.pad_token_id)
        torch.cuda.synchronize()
        return time.perf_counter() - t

    for variant in args.variants:
        dtype = "bf16" if variant == "bf16" else "fp32"
        attn = "eager" if variant == "eager" else "sdpa"
        rows = inputs[: len(inputs) // 2] if variant == "half-batch" else inputs
        torch.backends.cuda.matmul.allow_tf32 = variant == "tf32"
        torch.backends.cudnn.allow_tf32 = variant == "tf32"
        try:
            model = load(dtype, attn)
            timed(model, rows[:8], 4)  # warm-up
            torch.cuda.reset_peak_memory_stats()
            t1 = timed(model, rows, args.steps)
            t2 = timed(model, rows, 2 * args.steps)
            step_ms = (t2 - t1) / args.steps * 1000
            out["variants"][variant] = {"rows": len(rows), "dtype": dtype, "attention": attn,
                                        f"seconds_{args.steps}": round(t1, 3), f"seconds_{2 * args.steps}": round(t2, 3),
                                        "ms_per_step": round(step_ms, 2),
                                        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
        except Exception as e:  # keep the other variants' figures
            out["variants"][variant] = {"error": f"{type(e).__name__}: {e}"[:1000]}
        print(variant, json.dumps(out["variants"][variant]), flush=True)
        save()
        del model
        torch.cuda.empty_cache()
    torch.backends.cuda.matmul.allow_tf32 = False

    model = load("fp32", "sdpa")
    timed(model, inputs[:8], 4)
    ids, mask = batch(inputs, model.device)
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=args.steps,
                       min_new_tokens=args.steps, pad_token_id=tok.pad_token_id)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    events = prof.key_averages()
    kernels = sorted((e for e in events if getattr(e, "self_device_time_total", 0) > 0),
                     key=lambda e: e.self_device_time_total, reverse=True)
    cuda_total = sum(e.self_device_time_total for e in kernels)
    out["profile"] = {
        "wall_seconds": round(wall, 3), "steps": args.steps, "gpu_busy_seconds": round(cuda_total / 1e6, 3),
        "top": [{"name": e.key[:120], "calls": e.count, "self_ms": round(e.self_device_time_total / 1000, 2),
                 "share": round(e.self_device_time_total / cuda_total, 4)} for e in kernels[:20]],
        "cpu_ops_top": [{"name": e.key[:120], "calls": e.count, "cpu_total_ms": round(e.cpu_time_total / 1000, 2)}
                        for e in sorted(events, key=lambda e: e.cpu_time_total, reverse=True)[:15]],
    }
    print(json.dumps(out["profile"], indent=1), flush=True)
    save()


if __name__ == "__main__":
    main()
