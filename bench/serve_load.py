#!/usr/bin/env python
"""Load test of `covertune serve` on loopback: N concurrent clients x M requests to /v1/cover-letter,
once per max batch size (1 = one request at a time), the model loaded once and served by uvicorn on
127.0.0.1 and a free port.

    python bench/serve_load.py --clients 16 --requests 2 --max-new-tokens 64 --batch-sizes 1,default \\
        --data ../shared/data/cover-letter-dataset --json serve_load.json

Reports per batch size: letters/s, new tokens/s, p50/p95/p99 request latency, errors (every non-200
answer, or a transport error), batches and mean rows per batch (from the server's metrics), and the
throughput gain over max batch 1. Bounded: N x M requests per batch size, and --max-seconds per run (a
run that overruns stops and counts its unanswered requests as errors).

``--as-served`` serves what `covertune serve` serves when no model is named: the shipped model, its recipe
(16 grounded candidates per letter, its max new tokens unless --max-new-tokens is given) and engine auto
(llama.cpp on a machine without a GPU where it is installed), loaded by the serve stage's own
``build_engine``:

    python bench/serve_load.py --as-served --clients 16 --requests 1 --batch-sizes default \
        --data ../shared/data/cover-letter-dataset --json serve_load_recipe.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def applications(data: str, n: int) -> list[dict]:
    """``n`` requests' fields: the dataset's test rows (cycled), or the packaged sample."""
    import pandas as pd

    from covertune.core import records

    if data:
        path = Path(data) / "test.csv"
    else:
        from covertune.data.sample import sample_path

        path = Path(sample_path())
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = [records.inputs_of(records.from_source_row(r)) for r in frame.to_dict("records")]
    return [rows[i % len(rows)] for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def start_server(app, port: int):
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return srv, thread


async def drive(url: str, bodies: list[list[dict]], stream: bool, deadline: float) -> tuple[list, list, int]:
    import httpx

    latencies, tokens, errors = [], [], [0]
    reasons: dict[str, int] = {}  # what the failed requests got: "HTTP 503: ...", or the transport error

    async def client(mine: list[dict]):
        async with httpx.AsyncClient(timeout=None) as c:
            for body in mine:
                t0 = time.perf_counter()
                try:
                    if stream:
                        async with c.stream("POST", f"{url}/v1/cover-letter", json={**body, "stream": True}) as r:
                            text = "".join([t async for t in r.aiter_text()])
                        done = [json.loads(b[6:]) for b in text.split("\n\n") if b.startswith('data: {"type": "done"')]
                        ok = r.status_code == 200 and len(done) == 1
                        usage = done[0]["usage"] if ok else None
                    else:
                        r = await c.post(f"{url}/v1/cover-letter", json=body)
                        ok = r.status_code == 200
                        usage = r.json()["usage"] if ok else None
                    why = None if ok else f"HTTP {r.status_code}: {r.text[:120]}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{type(e).__name__}: {str(e)[:120]}"
                if ok:
                    latencies.append(time.perf_counter() - t0)
                    tokens.append(usage["completion_tokens"])
                else:
                    errors[0] += 1
                    reasons[why] = reasons.get(why, 0) + 1

    tasks = [asyncio.create_task(client(b)) for b in bodies]
    _, pending = await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0))
    for t in pending:
        t.cancel()
    unanswered = sum(len(b) for b in bodies) - len(latencies) - errors[0]
    if unanswered:
        reasons["unanswered when --max-seconds ran out"] = unanswered
    return latencies, tokens, errors[0] + unanswered, reasons


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--out", default="", help="a run directory whose model to serve (default: the base model)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--data", default="", help="dataset folder with test.csv (default: the packaged sample)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="1,default",
                    help="max batch sizes to compare; 1 = one at a time, default = `covertune serve`'s")
    ap.add_argument("--batch-window-ms", type=float, default=20.0)
    ap.add_argument("--stream", action="store_true", help="clients ask for server-sent events")
    ap.add_argument("--max-seconds", type=float, default=600, help="per batch size")
    ap.add_argument("--json", default="", help="write the results here too")
    ap.add_argument("--as-served", action="store_true",
                    help="the model, recipe and engine `covertune serve` loads when none is named")
    args = ap.parse_args()
    given_tokens = "--max-new-tokens" in sys.argv
    if args.clients < 1 or args.requests < 1 or args.clients * args.requests > 2000:
        ap.error("clients and requests must be >= 1, and clients x requests at most 2000")

    import socket

    import torch
    import transformers

    from covertune.config.stages import GenerateConfig, ServeConfig
    from covertune.models.letter_model import load_letter_model
    from covertune.serve.app import create_app
    from covertune.serve.engine import Engine

    from covertune.config.build import build
    from covertune.models.recipe import resolve_letter_model
    from covertune.stages.serve import build_engine

    lm = None if args.as_served else load_letter_model(GenerateConfig(model=args.model, out=args.out, dtype=args.dtype))
    apps = applications(args.data, args.clients * args.requests)
    results = []
    sizes = [ServeConfig().max_batch_size if s.strip() == "default" else int(s) for s in args.batch_sizes.split(",")]
    for size in sizes:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        options = dict(port=port, max_batch_size=size, batch_window_ms=args.batch_window_ms,
                       max_queue=max(64, args.clients * 2))
        if args.as_served:  # the serve stage's own config and loader: the recipe fills what is not given
            cfg = build("serve", {**options, **({"max_new_tokens": args.max_new_tokens} if given_tokens else {})})
            resolve_letter_model(cfg)  # the recipe's candidates (build_engine applies it again: the same)
            # the queue counts sequences: every client's request with all its candidates may wait
            cfg.max_queue = max(cfg.max_queue, args.clients * 2 * cfg.candidates)
            engine = build_engine(cfg)
            lm = engine.lm
        else:
            cfg = ServeConfig(**options, max_new_tokens=args.max_new_tokens)
            engine = Engine(lm, cfg)
        srv, thread = start_server(create_app(engine, cfg), port)
        try:
            bodies = [apps[c * args.requests:(c + 1) * args.requests] for c in range(args.clients)]
            t0 = time.perf_counter()
            lat, toks, errors, reasons = asyncio.run(drive(f"http://127.0.0.1:{port}", bodies, args.stream,
                                                  t0 + args.max_seconds))
            wall = time.perf_counter() - t0
        finally:
            srv.should_exit = True
            thread.join(60)
        m = engine.metrics
        row = {"max_batch_size": size, "clients": args.clients, "requests": args.clients * args.requests,
               "letters": len(lat), "errors": errors, "error_reasons": reasons, "seconds": round(wall, 2),
               "letters_per_s": round(len(lat) / wall, 3), "tokens_per_s": round(sum(toks) / wall, 1),
               "new_tokens": sum(toks), "mean_new_tokens": round(statistics.mean(toks), 1) if toks else None,
               "p50_s": round(percentile(lat, 0.5), 2), "p95_s": round(percentile(lat, 0.95), 2),
               "p99_s": round(percentile(lat, 0.99), 2), "batches": m.batches,
               "mean_batch_rows": round(m.batch_rows / m.batches, 2) if m.batches else None}
        results.append(row)
        print(json.dumps(row), flush=True)
    base = next((r for r in results if r["max_batch_size"] == 1), None)
    for r in results:
        r["gain_letters_per_s"] = round(r["letters_per_s"] / base["letters_per_s"], 2) if base and base["letters_per_s"] else None
    if getattr(lm.model, "is_llamacpp", False):
        device_text, dtype = f"cpu ({platform.processor() or platform.machine()}, llama.cpp)", f"gguf {cfg.gguf_quant}"
    else:
        device = next(lm.model.parameters()).device
        device_text = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                       f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
        dtype = str(next(lm.model.parameters()).dtype).replace("torch.", "")
    env = {"device": device_text,
           "torch": torch.__version__, "transformers": transformers.__version__, "model": lm.source,
           "dtype": dtype, "candidates": cfg.candidates, "select": cfg.select,
           "max_new_tokens": cfg.max_new_tokens, "stream": args.stream, "batch_window_ms": args.batch_window_ms,
           "command": " ".join(sys.argv)}
    print("| max batch | letters/s | tokens/s | p50 s | p95 s | p99 s | errors | mean rows/batch | gain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['max_batch_size']} | {r['letters_per_s']} | {r['tokens_per_s']} | {r['p50_s']} | {r['p95_s']} | "
              f"{r['p99_s']} | {r['errors']} | {r['mean_batch_rows']} | "
              f"{'-' if r['gain_letters_per_s'] is None else str(r['gain_letters_per_s']) + 'x'} |")
    print(json.dumps(env))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()
