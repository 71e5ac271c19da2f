#!/usr/bin/env python
"""The seconds a person waits for a letter, through the commands they run: `covertune write` from a cold start
and `covertune serve` warm, each engine side by side in one call, with the model write and serve load when none is
named (the shipped model and its recipe) unless --model/--out say otherwise.

For each engine (torch, llama.cpp) and each llama.cpp thread count:
- ``write cold``: `covertune write --input APP --json` as a new process, greedy (``--candidates 1``) and with
  the model's own recipe (its candidates), timed from the command to its exit (start-up, loading, decoding,
  grounding check);
- ``serve``: `covertune serve` started on a free loopback port (the seconds until /health answers), then
  ``--repeat`` requests to /v1/cover-letter one at a time, greedy (``"candidates": 1``) and with the
  model's recipe; the median and the range of the client's seconds per letter.
The application is a row of the dataset's test split (``--row``). The 1-minute load average before and after
each measurement is recorded: on a shared machine the figures are only as good as the load says.

    python bench/product_letter.py --json docs/results/bench/product_letter.json

``--baseline-src DIR`` (an earlier checkout's src, e.g. from `git worktree add`) times that checkout's cold
`write` in turns with this one's, on the same engine, model and application.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_DATA = Path(os.environ.get("COVERTUNE_SHARED", REPO.parent / "shared")) / "data" / "cover-letter-dataset"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def application(data: Path, row: int) -> dict:
    import pandas as pd

    from covertune.core import records

    frame = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    return {k: v for k, v in records.inputs_of(records.from_source_row(frame.iloc[row])).items() if v}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def write_cold(source: list[str], engine: list[str], app: Path, candidates: list[str], timeout: float,
               src: str = "") -> dict:
    """One `covertune write` as a new process; ``src``: run another checkout's package (its src folder)."""
    command = [sys.executable, "-m", "covertune", "write", "--input", str(app), "--json", *source, *engine,
               *candidates]
    env = {**os.environ, "PYTHONPATH": src} if src else None
    before = _load()
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    return {"seconds": round(seconds, 2), "new_tokens": result["usage"]["completion_tokens"],
            "candidates": len((result.get("candidates") or {}).get("candidates") or [1]),
            "letter_chars": len(result["letter"]), "letter_sha": hashlib.sha256(result["letter"].encode()).hexdigest()[:12],
            "load_before": before, "load_after": _load()}


def write_cold_against(baseline: str, source: list[str], engine: list[str], app: Path, candidates: list[str],
                       timeout: float, repeat: int) -> dict:
    """`covertune write` cold with this checkout and with ``baseline`` (another checkout's src), taking turns,
    ``repeat`` times each: the medians side by side, and whether both wrote the same letter."""
    runs: dict[str, list[dict]] = {"this": [], "baseline": []}
    for _ in range(repeat):
        runs["this"].append(write_cold(source, engine, app, candidates, timeout))
        runs["baseline"].append(write_cold(source, engine, app, candidates, timeout, src=baseline))
    out = {k: {"median_seconds": round(statistics.median(r["seconds"] for r in v), 2),
               "seconds": [r["seconds"] for r in v], "new_tokens": v[0]["new_tokens"]} for k, v in runs.items()}
    out["same_letter"] = len({r["letter_sha"] for v in runs.values() for r in v}) == 1
    out["baseline_src"] = baseline
    return out


def serve_warm(source: list[str], engine: list[str], fields: dict, repeat: int, timeout: float, log: Path,
               recipe: bool = True) -> dict:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "COVERTUNE_API_KEY"}
    command = [sys.executable, "-m", "covertune", "serve", "--port", str(port), *source, *engine]
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"covertune serve exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    if json.loads(response.read()).get("status") == "ok":
                        break
            except OSError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"covertune serve did not answer within {timeout} s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        ready = time.perf_counter() - t0
        rows = {"ready_seconds": round(ready, 2)}
        for name, extra in (("greedy", {"candidates": 1}), ("recipe", {}))[:2 if recipe else 1]:
            _post(url + "/v1/cover-letter", {**fields, **extra}, timeout)  # warm-up: first-call costs
            before, times, tokens, count = _load(), [], [], 0
            for _ in range(repeat):
                t = time.perf_counter()
                body = _post(url + "/v1/cover-letter", {**fields, **extra}, timeout)
                times.append(time.perf_counter() - t)
                tokens.append(body["usage"]["completion_tokens"])
                count = len((body.get("candidates") or {}).get("candidates") or [1])
            rows[name] = {"median_seconds": round(statistics.median(times), 2),
                          "min_seconds": round(min(times), 2), "max_seconds": round(max(times), 2),
                          "new_tokens": tokens, "candidates": count, "load_before": before, "load_after": _load()}
            print(f"  serve {name}: {rows[name]}", flush=True)
        return rows
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="", help="--model for write/serve (default: none named: the shipped model)")
    p.add_argument("--out", default="", help="--out for write/serve (a run directory)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder holding test.csv")
    p.add_argument("--row", type=int, default=0)
    p.add_argument("--engines", nargs="+", default=["llama.cpp", "torch"])
    p.add_argument("--threads", type=int, nargs="+", default=[0, 1], help="llama.cpp threads (0: physical cores)")
    p.add_argument("--recipe-engines", nargs="+", default=["llama.cpp"],
                   help="engines also timed with the model's recipe (torch's 16 candidates take minutes on a CPU)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--skip-write", action="store_true")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--baseline-src", default="", help="another checkout's src folder: its cold `write` (llama.cpp, "
                   "greedy and the recipe) timed in turns with this one's, --repeat times each")
    a = p.parse_args(argv)

    import covertune

    fields = application(Path(a.data), a.row)
    source = (["--model", a.model] if a.model else []) + (["--out", a.out] if a.out else [])
    work = Path(tempfile.mkdtemp(prefix="product-letter-"))
    app = work / "application.json"
    app.write_text(json.dumps(fields))
    versions = {"python": platform.python_version(), "covertune": getattr(covertune, "__version__", "")}
    for name in ("torch", "transformers", "llama_cpp"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           **versions}, "row": a.row, "source": source or "shipped model", "runs": []}
    print(json.dumps(results["machine"]), flush=True)
    for engine in a.engines:
        for threads in (a.threads if engine == "llama.cpp" else [None]):
            flags = ["--engine", engine] + ([] if threads is None else ["--threads", str(threads)])
            label = engine + ("" if threads is None else f", {threads or 'all'} threads")
            run = {"engine": engine, "threads": threads}
            # untimed first: the llama.cpp engine exports the model's GGUF once into covertune's cache
            run["first_write"] = write_cold(source, flags, app, ["--candidates", "1", "--max-new-tokens", "8"],
                                            a.timeout)
            if not a.skip_write:
                run["write_cold_greedy"] = write_cold(source, flags, app, ["--candidates", "1"], a.timeout)
                print(f"{label}: write cold greedy {run['write_cold_greedy']}", flush=True)
                if engine in a.recipe_engines:
                    run["write_cold_recipe"] = write_cold(source, flags, app, [], a.timeout)
                    print(f"{label}: write cold recipe {run['write_cold_recipe']}", flush=True)
                if a.baseline_src and engine == "llama.cpp" and threads == a.threads[0]:
                    for name, extra in (("greedy", ["--candidates", "1"]), ("recipe", [])):
                        run[f"write_cold_{name}_against_baseline"] = pair = write_cold_against(
                            a.baseline_src, source, flags, app, extra, a.timeout, a.repeat)
                        print(f"{label}: write cold {name}, this checkout against the baseline: {pair}", flush=True)
            run["serve"] = serve_warm(source, flags, fields, a.repeat, a.timeout,
                                      work / f"serve-{engine}-{threads}.log", engine in a.recipe_engines)
            print(f"{label}: serve ready in {run['serve']['ready_seconds']} s", flush=True)
            results["runs"].append(run)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
