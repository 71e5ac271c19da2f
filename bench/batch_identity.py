#!/usr/bin/env python
"""Does batching change what greedy decoding produces? The embedded model, one prompt at a time against
covertune's length-sorted, left-padded batches, on the first ``--rows`` test prompts.

    python bench/batch_identity.py --data ../shared/data/cover-letter-dataset --work /tmp/bi \\
        --rows 100 --batch-size 50 --max-new-tokens 160 --dtype fp32 --json batch_identity.json

Reports the share of letters whose token ids are identical, and for the others where they part.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def run(model, tok, inputs, batch_size, decoding) -> tuple[dict[int, list[int]], dict]:
    from covertune.generation.letters import generate_token_ids

    out, t0 = {}, time.perf_counter()
    for batch, rows in generate_token_ids(model, tok, inputs, batch_size, decoding):
        out.update(zip(batch, rows))
    secs = time.perf_counter() - t0
    tokens = sum(len(r) for r in out.values())
    return out, {"batch_size": batch_size, "new_tokens": tokens, "seconds": round(secs, 1),
                 "tokens_per_s": round(tokens / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    import torch

    from covertune.core import io
    from covertune.models import load as models
    from covertune.config.stages import DataConfig
    from covertune.stages.data import run_data
    from covertune.generation.decoding import Decoding
    from covertune.core.prompt import prompt_ids
    from covertune.core.rundir import read_split

    work = Path(args.work)
    if not (work / "data" / "test.jsonl").exists():
        run_data(DataConfig(data=args.data, out=str(work)))
    records = read_split(work, "test")[:args.rows]
    tok = models.load_tokenizer("embedded", padding_side="left")
    model = models.load_model("embedded", "none", args.dtype, tokenizer=tok).eval()
    inputs = [prompt_ids(r, tok, "raw") for r in records]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    one, one_speed = run(model, tok, inputs, 1, decoding)
    many, many_speed = run(model, tok, inputs, args.batch_size, decoding)
    same = [i for i in one if one[i] == many[i]]
    parted = []
    for i in sorted(set(one) - set(same)):
        a, b = one[i], many[i]
        k = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        parted.append({"row": records[i]["id"], "first_difference_at_token": k, "lengths": [len(a), len(b)]})
    texts_same = sum(tok.decode(one[i], skip_special_tokens=True) == tok.decode(many[i], skip_special_tokens=True)
                     for i in one)
    result = {"model": "embedded (SmolLM2-135M-Instruct)", "dtype": str(model.dtype).replace("torch.", ""),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "rows": len(records), "max_new_tokens": args.max_new_tokens,
              "greedy": True, "identical_token_ids": len(same), "share_identical": round(len(same) / len(one), 4),
              "identical_text": texts_same, "unbatched": one_speed, "batched": many_speed,
              "speedup": round(many_speed["tokens_per_s"] / one_speed["tokens_per_s"], 2), "differing": parted}
    io.write_json(Path(args.json), result)
    print(json.dumps({k: v for k, v in result.items() if k != "differing"}, indent=1))


if __name__ == "__main__":
    main()
