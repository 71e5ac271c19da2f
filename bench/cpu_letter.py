#!/usr/bin/env python
"""One letter on the CPU, engine by engine, side by side in one process: covertune's torch path and the
llama.cpp engine (covertune.generation.llamacpp_engine) on a run's model (the embedded model + the run's adapter), for
one held-out application (a row of the dataset's test split) in the raw prompt schema.

Measured, each after the model is loaded (load and GGUF export timed apart):
- torch greedy; torch 16 candidates as ``generate --candidates`` decodes them (the prompt prefilled once,
  covertune.generation.select.shared_prompt_batch) and as 16 full rows (``num_return_sequences``, the earlier path);
- llama.cpp greedy with the f16 and the q8_0 GGUF; 16 candidates in one batch sharing the prompt (q8_0);
  the count/cost frontier (4, 8, 16 candidates); llama.cpp threads 1 against the default.
Candidates are sampled as the ``smol`` recipe samples them (temperature 0.7, top-p 0.95, top-k 50, seed 42,
up to 512 new tokens, the first greedy), then chosen by grounded MBR (covertune.generation.select.choose), which is
timed too. The load average before and after every measurement is recorded: the machine may be shared.

    python bench/cpu_letter.py --run /tmp/demo_engine --threads 1 --json docs/results/bench/cpu_letter.json
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
DEFAULT_DATA = Path(os.environ.get("COVERTUNE_SHARED", REPO.parent / "shared")) / "data" / "cover-letter-dataset"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(results: list, name: str, fn, **info):
    """Run ``fn`` (returning the candidates' new token ids, a list of lists), record seconds and tokens."""
    before = _load()
    t0 = time.perf_counter()
    groups = fn()
    secs = time.perf_counter() - t0
    tokens = sum(len(c) for c in groups)
    row = {"name": name, "seconds": round(secs, 3), "new_tokens": tokens,
           "tokens_per_s": round(tokens / secs, 1), "lengths": [len(c) for c in groups],
           "load_before": before, "load_after": _load(), **info}
    results.append(row)
    print(f"{name:48s} {secs:7.2f} s  {tokens:5d} tokens  {tokens / secs:6.1f} tok/s  "
          f"load {before}->{row['load_after']}", flush=True)
    return groups


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory with adapter/ (or merged/)")
    p.add_argument("--model", default="embedded")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding test.csv")
    p.add_argument("--row", type=int, default=0, help="row of test.csv")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--candidates", type=int, nargs="+", default=[4, 8, 16], help="the frontier's counts")
    p.add_argument("--llamacpp-threads", type=int, default=0, help="llama.cpp's threads (0: the physical cores)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="llama.cpp thread counts beside that")
    p.add_argument("--torch-threads", type=int, default=0, help="torch's threads (0: torch's default)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    if not (Path(args.data) / "test.csv").is_file():
        print(f"--data {args.data}: test.csv not found there", file=sys.stderr)
        return 2
    if not Path(args.run).is_dir():
        print(f"--run {args.run}: no such run directory", file=sys.stderr)
        return 2

    import pandas as pd
    import torch

    from covertune.core import records
    from covertune.config.stages import GenerateConfig
    from covertune.generation.decoding import Decoding, check_pad, generate_batch, stop_token_ids
    from covertune.generation.letters import generate_token_ids
    from covertune.models.letter_model import load_letter_model
    from covertune.generation.gguf_cache import load_letter_model as load_gguf_letter_model
    from covertune.generation.llamacpp_engine import physical_cores
    from covertune.core.prompt import extract_letter
    from covertune.generation.select import choose, generate_candidate_ids
    from covertune.generation.seeded_sampling import RowSampler, row_seed

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    row = pd.read_csv(Path(args.data) / "test.csv", dtype=str, keep_default_na=False).iloc[args.row].to_dict()
    record = records.from_source_row(row)
    fields = records.inputs_of(record)
    cfg = GenerateConfig(model=args.model, out=args.run)
    greedy = Decoding(max_new_tokens=args.max_new_tokens)
    sampled = Decoding(args.max_new_tokens, True, 0.7, 0.95, 50, 1.0, 42)  # the smol recipe's candidates
    n_max = max(args.candidates)
    results: list[dict] = []
    setup: dict = {}
    letters: dict = {}

    def choice_of(tok, groups):
        t0 = time.perf_counter()
        texts = [extract_letter(tok.decode(ids, skip_special_tokens=True)) for ids in groups]
        c = choose(texts, "grounded-mbr", fields)
        return {"chosen": c.index, "choose_seconds": round(time.perf_counter() - t0, 3),
                "passing": sum(not r for r in c.reasons)}

    if not args.skip_torch:
        t0 = time.perf_counter()
        lm = load_letter_model(cfg)
        setup["torch_load_seconds"] = round(time.perf_counter() - t0, 2)
        model, tok = lm.model, lm.tokenizer
        ids = lm.prompt_ids(fields)
        stop = stop_token_ids(tok, model)
        pad = check_pad(tok, stop)
        setup.update(prompt_tokens=len(ids), torch_threads=torch.get_num_threads())
        g = timed(results, "torch greedy", lambda: [next(generate_token_ids(model, tok, [ids], 1, greedy))[1][0]],
                  engine="torch", candidates=1)
        letters["torch_greedy"] = extract_letter(tok.decode(g[0], skip_special_tokens=True))

        def shared():
            torch.manual_seed(sampled.seed)
            return next(generate_candidate_ids(model, tok, [ids], n_max, sampled, 1))[1][0]

        def full_rows():  # the prompt repeated in every row, each sampled row from its own seed
            from dataclasses import replace

            from transformers import LogitsProcessorList

            seeds = [None if k == 0 else row_seed(sampled.seed, ids, k) for k in range(n_max)]
            sampler = RowSampler(seeds, sampled.temperature, sampled.top_k, sampled.top_p)
            return generate_batch(model, [ids] * n_max, replace(sampled, do_sample=False), stop, pad,
                                  logits_processor=LogitsProcessorList([sampler]))

        g = timed(results, f"torch {n_max} candidates, prompt shared", shared, engine="torch", candidates=n_max)
        results[-1].update(choice_of(tok, g))
        results[-1]["candidate0_is_greedy"] = extract_letter(tok.decode(g[0], skip_special_tokens=True)) == \
            letters["torch_greedy"]
        g2 = timed(results, f"torch {n_max} candidates, {n_max} full rows", full_rows, engine="torch",
                   candidates=n_max)
        results[-1]["same_as_shared"] = g2 == g
        del lm, model
        import gc

        gc.collect()

    for quant in ("f16", "q8_0"):
        t0 = time.perf_counter()
        lm = load_gguf_letter_model(cfg, quant=quant, threads=args.llamacpp_threads)
        setup[f"llamacpp_{quant}_first_load_seconds"] = round(time.perf_counter() - t0, 2)  # export if not cached
        lm.model.close()
        t0 = time.perf_counter()
        lm = load_gguf_letter_model(cfg, quant=quant, threads=args.llamacpp_threads)
        setup[f"llamacpp_{quant}_cached_load_seconds"] = round(time.perf_counter() - t0, 2)
        model, tok = lm.model, lm.tokenizer
        ids = lm.prompt_ids(fields)
        stop = stop_token_ids(tok, model)
        setup.update(prompt_tokens=len(ids), llamacpp_threads_default=model.threads, gguf=str(model.path))
        g = timed(results, f"llama.cpp {quant} greedy", lambda: model.generate([ids], 1, greedy, stop)[0],
                  engine="llama.cpp", quant=quant, candidates=1, threads=model.threads)
        letters[f"llamacpp_{quant}_greedy"] = extract_letter(tok.decode(g[0], skip_special_tokens=True))
        if quant != "q8_0":
            model.close()
            continue
        for n in sorted(args.candidates):
            g = timed(results, f"llama.cpp {quant} {n} candidates, one batch", lambda: model.generate(
                [ids], n, sampled, stop)[0], engine="llama.cpp", quant=quant, candidates=n, threads=model.threads)
            results[-1].update(choice_of(tok, g))
            results[-1]["candidate0_is_greedy"] = extract_letter(
                tok.decode(g[0], skip_special_tokens=True)) == letters[f"llamacpp_{quant}_greedy"]
        default_threads = model.threads
        for threads in args.threads:
            if threads == default_threads:
                continue
            model.close()
            from covertune.generation.llamacpp_engine import LlamaCppModel

            model = LlamaCppModel(setup["gguf"], threads=threads, generation_config=model.generation_config)
            timed(results, f"llama.cpp {quant} greedy, {threads} thread(s)",
                  lambda: model.generate([ids], 1, greedy, stop)[0], engine="llama.cpp", quant=quant, candidates=1,
                  threads=threads)
            timed(results, f"llama.cpp {quant} {n_max} candidates, {threads} thread(s)",
                  lambda: model.generate([ids], n_max, sampled, stop)[0], engine="llama.cpp", quant=quant,
                  candidates=n_max, threads=threads)
        model.close()

    import llama_cpp
    import transformers

    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "physical_cores": physical_cores(), "cpu_count": os.cpu_count()},
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "llama_cpp_python": llama_cpp.__version__},
              "command": " ".join(sys.argv), "run": str(args.run), "row": args.row, "setup": setup,
              "decoding": {"greedy": greedy.__dict__, "candidates": sampled.__dict__},
              "results": results, "letters": letters}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
