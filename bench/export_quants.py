#!/usr/bin/env python
"""GGUF export of the embedded model (SmolLM2-135M-Instruct) in each quant type: file size, and in llama.cpp
(llama-cpp-python) the teacher-forced next-token argmax against covertune's fp32 model on the letters of
held-out applications (the first ``--letter-tokens`` tokens of each letter).

    python bench/export_quants.py --data ../shared/data/cover-letter-dataset --work /tmp/eq \\
        --quants f16 bf16 q8_0 q6_k q5_k_m q5_1 q5_0 q4_k_m q4_0 --rows 5 60 150 290 --letter-tokens 128

Prints a markdown table (quant, tensor types, MiB, agreeing positions).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "export"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quants", nargs="+", default=["f16", "q8_0"])
    ap.add_argument("--rows", nargs="+", type=int, default=[5, 60, 150, 290])
    ap.add_argument("--letter-tokens", type=int, default=128)
    args = ap.parse_args()

    import gguf
    import pandas as pd
    import torch

    from covertune.models import load as models
    from covertune.config.stages import ExportConfig
    from covertune.stages.export import export
    from covertune.core.prompt import letter_ids, prompt_ids
    from covertune.core.records import from_source_row
    from llama_cpp_check import load, logits

    work = Path(args.work)
    run = work / "run"
    if not (run / "merged").exists():
        shutil.copytree(models.embedded_model_dir(), run / "merged")
    tok = models.load_tokenizer("embedded")
    model = models.load_model("embedded", "none", "fp32", device="cpu").eval()
    frame = pd.read_csv(Path(args.data) / "test.csv", keep_default_na=False, dtype=str)
    rows = [from_source_row(frame.iloc[i].to_dict()) for i in args.rows]
    seqs = []
    for r in rows:
        p = prompt_ids(r, tok, "raw")
        seqs.append((p + letter_ids(r["cover_letter"], tok, "raw")[:args.letter_tokens], len(p) - 1))
    refs = []
    with torch.no_grad():
        for ids, first in seqs:
            refs.append(model(input_ids=torch.tensor([ids])).logits[0, first:-1].argmax(-1).numpy())
    print("| quant | tensor types | size (MiB) | argmax agreement | export (s) |")
    print("|---|---|---|---|---|")
    for quant in args.quants:
        t0 = time.perf_counter()
        export(ExportConfig(out=str(run), quant=quant))
        secs = time.perf_counter() - t0
        path = run / "export" / f"gguf-{quant}" / "model.gguf"
        types = sorted({t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors})
        llm = load(path, n_ctx=max(len(s) for s, _ in seqs) + 8)
        same = total = 0
        for (ids, first), ref in zip(seqs, refs):
            got = logits(llm, ids)[first:-1].argmax(-1)
            same += int((got == ref).sum())
            total += len(ref)
        del llm
        print(f"| {quant} | {', '.join(types)} | {path.stat().st_size / 2**20:.1f} | {same}/{total} = "
              f"{100 * same / total:.1f}% | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
