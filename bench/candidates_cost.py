#!/usr/bin/env python
"""What do N candidates per prompt cost? One batched call (``covertune generate --candidates N``) against
greedy decoding alone and against N separate passes (the greedy one plus N-1 sampled ones).

The prompts are the first ``--rows`` test rows of the dataset in the raw prompt schema; the model is
covertune's (``--model``, default the embedded one, with ``--adapter`` optional), greedy pass first as a
warm-up of the same shapes. Every pass generates at most ``--max-new-tokens`` per letter; seconds are wall
time of the generation calls, new tokens count every candidate's tokens up to its stop token.

    python bench/candidates_cost.py --data ../shared/data/cover-letter-dataset --rows 8 --candidates 8 \\
        --max-new-tokens 256 --json docs/results/bench/candidates_cost_<card>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(os.environ.get("COVERTUNE_SHARED", REPO.parent / "shared"))
                                         / "data" / "cover-letter-dataset"), help="folder holding test.csv")
    p.add_argument("--model", default="embedded")
    p.add_argument("--adapter", default="", help="a PEFT adapter folder to run on the model (optional)")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--candidates", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if not (Path(args.data) / "test.csv").is_file():
        print(f"--data {args.data}: test.csv not found there", file=sys.stderr)
        return 2

    import pandas as pd
    import torch

    from covertune.core import io, records
    from covertune.models import load as models
    from covertune.generation.decoding import Decoding
    from covertune.generation.letters import generate_letters
    from covertune.core.prompt import prompt_ids
    from covertune.generation.select import generate_candidate_ids

    frame = pd.read_csv(Path(args.data) / "test.csv", dtype=str, keep_default_na=False).head(args.rows)
    recs = [records.from_source_row(r) for r in frame.to_dict("records")]
    tok = models.load_tokenizer(args.model, padding_side="left")
    model = models.load_model(args.model, "none", args.dtype, tokenizer=tok)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    prompts = [prompt_ids(r, tok, "raw") for r in recs]
    n, size, mnt = args.candidates, args.batch_size, args.max_new_tokens
    sampled = Decoding(max_new_tokens=mnt, do_sample=True, temperature=0.7, top_p=0.95, seed=1)

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        tokens = fn()
        sync()
        return {"seconds": round(time.perf_counter() - t0, 3), "new_tokens": tokens}

    def greedy():
        st: dict = {}
        generate_letters(model, tok, prompts, size, Decoding(max_new_tokens=mnt), stats=st, progress=False)
        return st["new_tokens"]

    def separate():
        total = greedy()
        for k in range(n - 1):
            st: dict = {}
            generate_letters(model, tok, prompts, size, Decoding(max_new_tokens=mnt, do_sample=True,
                                                                 temperature=0.7, top_p=0.95, seed=k),
                             stats=st, progress=False)
            total += st["new_tokens"]
        return total

    def batched():
        return sum(len(ids) for _, groups in generate_candidate_ids(model, tok, prompts, n, sampled, size)
                   for group in groups for ids in group)

    greedy()  # warm-up
    result = {"greedy": timed(greedy), "candidates_one_call": timed(batched), "separate_passes": timed(separate)}
    base = result["greedy"]["seconds"]
    for k in ("candidates_one_call", "separate_passes"):
        result[k]["x_greedy"] = round(result[k]["seconds"] / base, 2) if base else None
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    import transformers

    result["setup"] = {"model": args.model, "adapter": args.adapter, "rows": args.rows, "candidates": n,
                       "batch_size": size, "max_new_tokens": mnt, "dtype": str(next(model.parameters()).dtype),
                       "device": device, "torch": torch.__version__, "transformers": transformers.__version__,
                       "command": "python bench/candidates_cost.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps(result, indent=2))
    if args.json:
        io.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
