#!/usr/bin/env python
"""A hostile client against a real `covertune serve` on loopback: the known attack families replayed, then
random bodies for every JSON route (hypothesis), counting tracebacks in the server's log and 5xx answers.

    python bench/hostile_client.py --model embedded --cases 400 --max-seconds 300 --json hostile.json

The script starts `python -m covertune serve` itself on 127.0.0.1 and a free port (it never talks to any
other address), with a small --max-new-tokens-cap so that the requests that do reach the model stay short.
Families replayed (each with the status it must get): other content types (415), a foreign Origin (403),
a rebound Host (403), a pinned-out extension id is covered by the unit tests, lone surrogates, seeds outside
0..2**32-1 and non-finite numbers (422), a prompt over the context (422 naming the prompt), invalid JSON
(400), an oversized body (413), a client that disconnects mid-body or before its letter is written (no
5xx, no traceback), requests with distinct decoding settings beyond --max-queue (503 with Retry-After,
never more waiting than the bound). Then random fuzzing: for each JSON route, a valid body overlaid with
random keys and values of every JSON type (including NaN/Infinity and lone surrogates), sent as JSON.
Bounded by --cases (fuzzed bodies) and --max-seconds (the whole run). Prints
"N cases, T tracebacks, F 5xx" (5xx: server errors; the queue's 503 with Retry-After is by design and
listed apart) and, per family, the cases that did not get their expected status.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROUTES = {
    "/v1/cover-letter": {"job_title": "Welder", "hiring_company": "Acme", "applicant_name": "Ann Lee",
                         "skillsets": "welding, safety", "max_new_tokens": 4},
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Write a short letter."}], "max_tokens": 4},
    "/api/generate": {"model": "covertune", "prompt": "Write a short letter.", "stream": False,
                      "options": {"num_predict": 4}},
    "/api/chat": {"model": "covertune", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                  "options": {"num_predict": 4}},
}
KEYS = sorted({"job_title", "hiring_company", "preferred_qualifications", "applicant_name", "current_experience",
               "past_experience", "skillsets", "qualifications", "stream", "model", "candidates", "select",
               "max_new_tokens", "temperature", "top_p", "top_k", "seed", "repetition_penalty", "messages",
               "max_tokens", "max_completion_tokens", "n", "stream_options", "prompt", "system", "options"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int, log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env.pop("COVERTUNE_API_KEY", None)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "covertune", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--model", args.model, "--dtype", args.dtype, "--max-new-tokens", "4", "--max-new-tokens-cap",
               str(args.max_new_tokens_cap), "--max-queue", str(args.max_queue), "--max-field-chars",
               str(args.max_field_chars), "--max-body-bytes", str(args.max_body_bytes), "--graceful-timeout-s", "5"]
    log = open(log_path, "wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    import httpx

    deadline = time.time() + args.start_seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"covertune serve exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"covertune serve did not answer /health within {args.start_seconds} s; see {log_path}")


class Tally:
    def __init__(self):
        self.cases, self.five_xx, self.transport, self.unexpected = 0, 0, 0, {}
        self.statuses: dict[str, dict[int, int]] = {}

    def add(self, family: str, status: int | None, expected=None, hung_up: bool = False) -> None:
        """``hung_up``: the client closed the connection on purpose (no answer expected)."""
        self.cases += 1
        counts = self.statuses.setdefault(family, {})
        counts[status or 0] = counts.get(status or 0, 0) + 1
        if status is None and not hung_up:
            self.transport += 1
        elif status is not None and status >= 500 and status != 503:  # 503: busy, with Retry-After, by design
            self.five_xx += 1
        if expected is not None and status not in (expected if isinstance(expected, tuple) else (expected,)):
            self.unexpected.setdefault(family, []).append(status)


def raw(port: int, data: bytes, wait: float = 0.0) -> None:
    """Send raw bytes and hang up after ``wait`` seconds, without reading an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        time.sleep(wait)


def request(method: str, path: str, body: bytes, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


class NoAnswer:
    status_code, text = None, ""


class Client:
    """httpx.Client whose transport errors (a reset connection) are an answer without a status."""

    def __init__(self, url: str, timeout: float):
        import httpx

        self.http, self.errors = httpx.Client(base_url=url, timeout=timeout), (httpx.HTTPError,)

    def post(self, *args, **kwargs):
        try:
            return self.http.post(*args, **kwargs)
        except self.errors:
            return NoAnswer()

    def get(self, *args, **kwargs):
        try:
            return self.http.get(*args, **kwargs)
        except self.errors:
            return NoAnswer()

    def close(self):
        self.http.close()


def replay(url: str, port: int, tally: Tally, args) -> None:
    """The attack families of the security review, each with the status it must get."""
    c = Client(url, 120)
    for route, body in ROUTES.items():
        data = json.dumps(body).encode()
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            tally.add("content-type", c.post(route, content=data, headers=headers).status_code, 415)
        for ctype in ("text/plain", "application/json"):
            r = c.post(route, content=data, headers={"Content-Type": ctype, "Origin": "https://evil.example"})
            tally.add("foreign-origin", r.status_code, 403)
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io"):
            tally.add("rebound-host", c.post(route, json=body, headers={"Host": host}).status_code, 403)
        tally.add("invalid-json", c.post(route, content=b'{"a": ', headers={"Content-Type": "application/json"})
                  .status_code, 400)
        big = json.dumps({**body, "pad": "x" * (args.max_body_bytes + 1)}).encode()
        tally.add("oversized-body", c.post(route, content=big, headers={"Content-Type": "application/json"})
                  .status_code, 413)
    for route in ("/metrics", "/health", "/v1/models", "/api/tags"):
        tally.add("rebound-host", c.get(route, headers={"Host": "evil.example"}).status_code, 403)
        tally.add("foreign-origin", c.get(route, headers={"Origin": "https://evil.example"}).status_code, 403)
    surrogates = [("/v1/cover-letter", b'{"job_title": "\\ud800"}'),
                  ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}'),
                  ("/api/generate", b'{"model": "covertune", "prompt": "\\ud800", "stream": false}'),
                  ("/api/chat", b'{"model": "covertune", "messages": [{"role": "user", "content": "\\ud83d"}]}')]
    for route, data in surrogates:
        tally.add("lone-surrogate", c.post(route, content=data, headers={"Content-Type": "application/json"})
                  .status_code, 422)
    for seed in (-1, 2**32, 2**64):
        for route, body in ROUTES.items():
            sampled = ({**body, "options": {**body["options"], "temperature": 1, "seed": seed}} if "options" in body
                       else {**body, "temperature": 1, "seed": seed})
            tally.add("seed-range", c.post(route, json=sampled).status_code, 422)
    for const in (b"Infinity", b"-Infinity", b"NaN"):
        data = b'{"job_title": "Welder", "max_new_tokens": 4, "temperature": ' + const + b"}"
        tally.add("non-finite", c.post("/v1/cover-letter", content=data,
                                       headers={"Content-Type": "application/json"}).status_code, 422)
        data = b'{"model": "covertune", "prompt": "hi", "options": {"top_p": ' + const + b"}}"
        tally.add("non-finite", c.post("/api/generate", content=data,
                                       headers={"Content-Type": "application/json"}).status_code, 422)
    long = {**ROUTES["/v1/cover-letter"], **{k: "SQL, Python, reporting. " * (args.max_field_chars // 25)
                                            for k in ("skillsets", "past_experience", "current_experience",
                                                      "preferred_qualifications", "qualifications", "job_title",
                                                      "applicant_name")}}
    r = c.post("/v1/cover-letter", json=long)
    tally.add("prompt-over-context", r.status_code, (422, 200))  # 200 when the model's context holds it
    if r.status_code == 422 and "max_new_tokens" in r.text:
        tally.unexpected.setdefault("prompt-over-context", []).append("blamed max_new_tokens")
    # clients that disconnect: mid-body, and before a non-streamed letter is written
    head = {"Host": "127.0.0.1", "Content-Type": "application/json"}
    partial = (b"POST /v1/cover-letter HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Content-Length: 5000\r\n\r\n" + b'{"job_title": "' + b"x" * 50)
    for _ in range(3):
        tally.add("disconnect-mid-body", raw(port, partial, wait=0.2), hung_up=True)
    body = json.dumps({**ROUTES["/v1/cover-letter"], "max_new_tokens": args.max_new_tokens_cap}).encode()
    for _ in range(3):
        tally.add("disconnect-before-letter", raw(port, request("POST", "/v1/cover-letter", body, head),
                                                  wait=0.05), hung_up=True)
    # more requests of distinct decoding settings than --max-queue, at once
    import concurrent.futures

    def one(k: int) -> int | None:
        own = Client(url, 300)
        try:
            return own.post("/v1/cover-letter", json={**ROUTES["/v1/cover-letter"],
                                                        "repetition_penalty": 1.0 + k / 100}).status_code
        finally:
            own.close()

    n = args.max_queue * 3
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        for status in pool.map(one, range(n)):
            tally.add("queue-bound", status, (200, 503))
    waiting = [float(line.split()[-1]) for line in c.get("/metrics").text.splitlines()
               if line.startswith("covertune_queue_waiting ")]
    if waiting and waiting[0] > args.max_queue:
        tally.unexpected.setdefault("queue-bound", []).append(f"{waiting[0]} waiting")
    c.close()


def fuzz(url: str, tally: Tally, args, deadline: float) -> None:
    """Random bodies for every JSON route: a valid body overlaid with random keys and JSON values."""
    import httpx
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)  # lone surrogates included
    scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | text)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.sampled_from(KEYS) | text, inner, max_size=4), max_leaves=12)
    overlay = st.dictionaries(st.sampled_from(KEYS) | text, values, max_size=6)
    client = httpx.Client(base_url=url, timeout=300)

    @settings(max_examples=args.cases, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(sorted(ROUTES)), extra=overlay, as_is=st.booleans())
    def one(route, extra, as_is):
        if time.time() > deadline:
            return
        body = extra if as_is else {**ROUTES[route], **extra}
        data = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity as JavaScript writes them
        try:
            status = client.post(route, content=data, headers={"Content-Type": "application/json"}).status_code
        except httpx.HTTPError:
            status = None
        tally.add("fuzz", status)

    one()
    client.close()


def tracebacks(log_path: Path) -> int:
    return log_path.read_text(encoding="utf-8", errors="replace").count("Traceback (most recent call last)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded", help="the model `covertune serve --model` loads")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--cases", type=int, default=300, help="random bodies (after the replayed families)")
    p.add_argument("--max-seconds", type=float, default=600, help="the whole run at most")
    p.add_argument("--start-seconds", type=float, default=300, help="to wait for the server to load")
    p.add_argument("--max-new-tokens-cap", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=4)
    p.add_argument("--max-field-chars", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=65536)
    p.add_argument("--log", default="", help="the server's log file (default: a temporary one)")
    p.add_argument("--json", default="", help="write the tally here")
    args = p.parse_args()
    t0 = time.time()
    deadline = t0 + args.max_seconds
    import tempfile

    log_path = Path(args.log) if args.log else Path(tempfile.mkdtemp(prefix="hostile-")) / "serve.log"
    port = free_port()
    proc = start_server(args, port, log_path)
    url = f"http://127.0.0.1:{port}"
    tally = Tally()
    try:
        replay(url, port, tally, args)
        fuzz(url, tally, args, deadline)
        time.sleep(0.5)  # the server logs the last disconnects
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    found = tracebacks(log_path)
    seconds = time.time() - t0
    print(f"{tally.cases} cases, {found} tracebacks, {tally.five_xx} 5xx ({tally.transport} transport errors, "
          f"{seconds:.0f} s; server log {log_path})")
    for family, counts in tally.statuses.items():
        wrong = tally.unexpected.get(family, [])
        print(f"  {family}: " + ", ".join(f"{s or 'no answer'} x{n}" for s, n in sorted(counts.items()))
              + (f"; NOT AS EXPECTED: {wrong}" if wrong else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": tally.cases, "tracebacks": found, "five_xx": tally.five_xx,
                                               "transport_errors": tally.transport, "seconds": round(seconds, 1),
                                               "statuses": tally.statuses, "unexpected": tally.unexpected,
                                               "model": args.model}, indent=2))
    return 0 if found == 0 and tally.five_xx == 0 and not tally.transport and not tally.unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
