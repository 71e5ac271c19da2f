#!/usr/bin/env python
"""The embedded model's fine-tuned test letters through every generation engine, in one process.

Reads a run directory where ``covertune data`` and ``covertune train`` have run (an adapter trained on
the original base, as the ``smol`` preset does), loads the base and the adapter as ``covertune generate``
does for such an adapter, and writes the 349 fine-tuned letters with each engine (covertune.generation.engines)
and dtype, in turn, with covertune's own ``generate_letters`` (greedy, max 512 new tokens, batch 128).
Each (engine, dtype) runs --passes times in the same process: the first pass of ``static`` and
``continuous`` includes compiling the decoding step and capturing CUDA graphs; later passes reuse them.
Reported per pass: seconds, new tokens, tokens/s, peak GPU memory; per engine: the share of letters
identical to the ``plain`` engine's in the same dtype, and the character where the others first
differ. The letters are saved (``letters.json``) for scoring (ROUGE-L) elsewhere.

    python bench/generate_embedded.py --run runs/smol --engines plain static continuous --dtypes fp32 bf16 \\
        --json bench_generate_embedded.json --letters letters.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="run directory holding data/test.jsonl and adapter/")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--engines", nargs="+", default=["plain", "static", "continuous"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32"])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--plain-passes", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--json", default="bench_generate_embedded.json")
    ap.add_argument("--letters", default="letters.json")
    ap.add_argument("--variants", nargs="*", default=[],
                    help="ENGINE:BATCH:WEIGHTS[:PASSES[:ATTENTION]] (WEIGHTS: adapter = unmerged on the base, "
                         "merged = merged in memory; ATTENTION: sdpa (default), eager, flex_attention, sdpa-gqa: "
                         "SDPA told to handle the key/value groups itself, TRANSFORMERS_SDPA_FORCE_GQA=1, or "
                         "sdpa-repeat: static keeps SDPA's key/value copies), all in "
                         "--dtypes[0]; the first is the baseline the others are compared with. A static "
                         "variant's compiled step may be reused by a later static variant of the same shape "
                         "whatever its ATTENTION: time static variants that differ only there in separate "
                         "processes")
    args = ap.parse_args()

    import torch
    import transformers

    from covertune.core import io
    from covertune.models import load as models
    from covertune.core.prompt import prompt_ids

    run = Path(args.run)
    records = io.read_jsonl(run / "data" / "test.jsonl")
    tok = models.load_tokenizer(args.model, padding_side="left")
    inputs = [prompt_ids(r, tok, "raw") for r in records]
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "transformers": transformers.__version__,
               "rows": len(inputs), "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
               "runs": {}}
    letters: dict[str, list[str]] = {}

    def save():
        Path(args.json).write_text(json.dumps(results, indent=2))
        Path(args.letters).write_text(json.dumps(letters))

    if args.variants:
        run_variants(args, tok, inputs, results, letters, save, run)
    else:
        run_engines(args, tok, inputs, results, letters, save, run)
    save()


def compare(results: dict, letters: dict, base_key: str, key: str, name: str | None = None) -> None:
    """How many of ``key``'s letters equal ``base_key``'s, and where the others first differ."""
    base, other = letters.get(base_key), letters.get(key)
    if base is None or other is None:
        return
    same = sum(x == y for x, y in zip(base, other))
    firsts = sorted(next((k for k, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
                    for x, y in zip(base, other) if x != y)
    results[name or f"same_as_{base_key}_{key}"] = {"identical_letters": same, "of": len(base),
                                                     "share": round(same / len(base), 4),
                                                     "first_difference_chars": firsts}
    print(key, "identical to", base_key, ":", same, "of", len(base), flush=True)


def run_variants(args, tok, inputs, results, letters, save, run) -> None:
    """Each variant in turn in one process (the model loaded once; merged after the unmerged variants),
    compared with the first variant's letters."""
    from peft import PeftModel

    from covertune.models import load as models

    dtype = args.dtypes[0]
    specs = []
    for v in args.variants:
        parts = v.split(":")
        engine, batch, weights = parts[0], int(parts[1]), parts[2]
        passes = int(parts[3]) if len(parts) > 3 else 1
        attention = parts[4] if len(parts) > 4 else "sdpa"
        if weights not in ("adapter", "merged"):
            raise SystemExit(f"variant {v!r}: weights must be adapter or merged")
        if attention not in ATTENTION:
            raise SystemExit(f"variant {v!r}: attention must be one of {', '.join(ATTENTION)}")
        specs.append((engine, batch, weights, passes, attention, v))
    # unmerged variants first: merging changes the loaded model in place
    order = sorted(range(len(specs)), key=lambda k: specs[k][2] == "merged")
    model = models.load_model(args.model, "none", dtype, tokenizer=tok)
    model = PeftModel.from_pretrained(model, str(run / "adapter")).eval()
    merged = False
    for k in order:
        engine, batch, weights, passes, attention, key = specs[k]
        if weights == "merged" and not merged:
            model = model.merge_and_unload().eval()
            merged = True
        with attention_implementation(model, attention):
            run_variant(args, tok, inputs, results, letters, save, model, engine, batch, passes, dtype, key)
    base_key = specs[0][-1]
    for *_, key in specs[1:]:
        compare(results, letters, base_key, key)


ATTENTION = ("sdpa", "eager", "flex_attention", "sdpa-gqa", "sdpa-repeat")


@contextmanager
def attention_implementation(model, attention: str):
    """The model's attention set to ``attention`` (ATTENTION) while the block runs, then back to what it was.
    ``sdpa-gqa``: SDPA told to handle the key/value groups itself (TRANSFORMERS_SDPA_FORCE_GQA=1);
    ``sdpa-repeat``: SDPA, and the static engine keeps it as it is (compiled, it copies the key/value heads)
    instead of switching to covertune.generation.gqa_attention."""
    import os
    from unittest import mock

    from covertune.generation import engines

    before = model.config._attn_implementation
    force_gqa = {"TRANSFORMERS_SDPA_FORCE_GQA": "1"} if attention == "sdpa-gqa" else {}
    model.set_attn_implementation("sdpa" if attention.startswith("sdpa") else attention)
    try:
        with mock.patch.dict(os.environ, force_gqa), \
                mock.patch.object(engines, "STATIC_PACK_GQA", attention != "sdpa-repeat"):
            yield
    finally:
        model.set_attn_implementation(before)


def run_variant(args, tok, inputs, results, letters, save, model, engine, batch, passes, dtype, key) -> None:
    """``passes`` timed passes of one variant; its last letters kept under ``key``."""
    import torch

    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters

    for n in range(passes):
        st: dict = {}
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        try:
            out = generate_letters(model, tok, inputs, batch, Decoding(max_new_tokens=args.max_new_tokens),
                                   stats=st, progress=False, engine=engine)
        except Exception as e:  # keep the other variants' figures
            results["runs"].setdefault(key, []).append({"error": f"{type(e).__name__}: {e}"[:2000]})
            print(key, "failed:", e, flush=True)
            save()
            break
        st.update(tokens_per_s=round(st["new_tokens"] / st["seconds"], 1), dtype=dtype,
                  peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None, pass_=n + 1)
        results["runs"].setdefault(key, []).append(st)
        letters[key] = out
        print(key, json.dumps(st), flush=True)
        save()


def run_engines(args, tok, inputs, results, letters, save, run) -> None:
    """Each engine x dtype with the adapter unmerged on the base, batch --batch-size."""
    import torch
    from peft import PeftModel

    from covertune.models import load as models
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters

    for dtype in args.dtypes:
        model = models.load_model(args.model, "none", dtype, tokenizer=tok)
        model = PeftModel.from_pretrained(model, str(run / "adapter")).eval()
        for n in range(max(args.passes, args.plain_passes)):
            for engine in args.engines:
                if n >= (args.plain_passes if engine == "plain" else args.passes):
                    continue
                key = f"{engine}_{dtype}"
                st: dict = {}
                torch.cuda.reset_peak_memory_stats()
                try:
                    out = generate_letters(model, tok, inputs, args.batch_size,
                                           Decoding(max_new_tokens=args.max_new_tokens), stats=st,
                                           progress=False, engine=engine)
                except Exception as e:  # keep the other engines' figures
                    results["runs"].setdefault(key, []).append({"error": f"{type(e).__name__}: {e}"[:2000]})
                    print(key, "failed:", e, flush=True)
                    save()
                    continue
                st.update(tokens_per_s=round(st["new_tokens"] / st["seconds"], 1),
                          peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2), pass_=n + 1)
                results["runs"].setdefault(key, []).append(st)
                letters[key] = out
                print(key, json.dumps(st), flush=True)
                save()
        for engine in args.engines:
            if engine != "plain":
                compare(results, letters, f"plain_{dtype}", f"{engine}_{dtype}", name=f"same_as_plain_{engine}_{dtype}")
        save()
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
