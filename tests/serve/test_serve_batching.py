"""Dynamic batching: each request gets its own letter, equal to one-at-a-time greedy generation."""

from __future__ import annotations

import threading

import httpx

from covertune.generation.decoding import Decoding
from covertune.generation.letters import generate_token_ids
from covertune.core.prompt import extract_letter, prompt_ids
from covertune.serve.batching import Batcher, Job, LetterText

from serve_fixtures import FIELDS, make_server, serve_model_dir, tiny_lm  # noqa: F401  (fixtures)

APPLICANTS = ["Jane Doe", "Li", "Ana Maria Lopez Garcia", "Sam", "Oluwaseun Adeyemi-Johnson", "Bo"]


def variants():
    return [{**FIELDS, "applicant_name": name, "skillsets": ", ".join(["SQL"] * (n + 1))}
            for n, name in enumerate(APPLICANTS)]


def one_at_a_time(lm, fields, max_new_tokens):
    inputs = [prompt_ids(fields, lm.tokenizer, lm.prompt_format)]
    [(_, [ids])] = list(generate_token_ids(lm.model, lm.tokenizer, inputs, 1, Decoding(max_new_tokens=max_new_tokens)))
    return ids


class Collect:
    def __init__(self):
        self.events, self.done = [], threading.Event()

    def __call__(self, kind, payload):
        self.events.append((kind, payload))
        if kind in ("done", "error"):
            self.done.set()


def test_batch_equals_one_at_a_time(tiny_lm):
    batches = []
    batcher = Batcher(tiny_lm.model, tiny_lm.tokenizer, max_batch_size=8, window_s=0.5,
                      on_batch=lambda rows, tokens, secs: batches.append(rows))
    lengths = [6, 20, 13, 20, 1, 9]  # each request its own max_new_tokens
    sinks, jobs = [], []
    for fields, n in zip(variants(), lengths):
        ids = prompt_ids(fields, tiny_lm.tokenizer, "raw")
        sinks.append(Collect())
        jobs.append(Job(ids, Decoding(max_new_tokens=n), sinks[-1], stream=True))
    assert len({len(j.ids) for j in jobs}) > 1  # prompts of different lengths: left padding is exercised
    for job in jobs:
        batcher.submit(job)
    batcher.start()
    try:
        assert all(s.done.wait(60) for s in sinks)
    finally:
        batcher.stop(10)
    assert batches == [len(jobs)]  # one generate call for all
    for fields, n, sink in zip(variants(), lengths, sinks):
        result = sink.events[-1][1]
        expected = one_at_a_time(tiny_lm, fields, n)
        assert result.token_ids == expected
        assert result.letter == extract_letter(tiny_lm.tokenizer.decode(expected, skip_special_tokens=True))
        assert "".join(p for k, p in sink.events if k == "delta") == result.letter


def test_sampling_requests_get_their_own_batch(tiny_lm):
    batches = []
    batcher = Batcher(tiny_lm.model, tiny_lm.tokenizer, max_batch_size=8, window_s=0.3,
                      on_batch=lambda rows, tokens, secs: batches.append(rows))
    ids = [prompt_ids(fields, tiny_lm.tokenizer, "raw") for fields in variants()[:3]]
    greedy = Decoding(max_new_tokens=8)
    sampled = Decoding(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=0, seed=5)
    plan = [greedy, sampled, greedy, greedy]
    sinks = [Collect() for _ in plan]
    cancelled = Job(ids[0], greedy, Collect())
    cancelled.cancelled = True  # its client went away before the batch began: never generated
    for row, (decoding, sink) in zip([ids[0], ids[1], ids[2], ids[1]], zip(plan, sinks)):
        batcher.submit(Job(row, decoding, sink))
    batcher.submit(cancelled)
    batcher.start()
    try:
        assert all(s.done.wait(60) for s in sinks)
    finally:
        batcher.stop(10)
    assert sorted(batches) == [1, 3] and not cancelled.emit.events
    results = [s.events[-1][1] for s in sinks]
    assert results[0].token_ids == one_at_a_time(tiny_lm, variants()[0], 8)
    assert results[3].token_ids == one_at_a_time(tiny_lm, variants()[1], 8)
    # the sampled letter depends on its seed alone: the same request alone gives the same tokens
    again = Collect()
    batcher = Batcher(tiny_lm.model, tiny_lm.tokenizer, window_s=0)
    batcher.submit(Job(ids[1], sampled, again))
    batcher.start()
    try:
        assert again.done.wait(60)
    finally:
        batcher.stop(10)
    assert again.events[-1][1].token_ids == results[1].token_ids != results[3].token_ids


def test_concurrent_http_requests(make_server, tiny_lm):
    url, app = make_server(max_batch_size=8, batch_window_ms=200)
    fields = variants()
    out: dict[int, str] = {}

    def ask(i):
        stream = i % 2 == 1
        with httpx.Client(timeout=120) as c:
            if stream:
                with c.stream("POST", f"{url}/v1/cover-letter", json={**fields[i], "stream": True}) as r:
                    text = "".join(r.iter_text())
                deltas = [__import__("json").loads(b[6:]) for b in text.split("\n\n") if b.startswith("data: {")]
                out[i] = "".join(d["text"] for d in deltas if d["type"] == "delta")
                assert deltas[-1]["letter"] == out[i]
            else:
                out[i] = c.post(f"{url}/v1/cover-letter", json=fields[i]).json()["letter"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(fields))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(out) == list(range(len(fields)))
    for i, f in enumerate(fields):
        expected = one_at_a_time(tiny_lm, f, 24)
        assert out[i] == extract_letter(tiny_lm.tokenizer.decode(expected, skip_special_tokens=True))
    m = app.state.engine.metrics
    assert m.batch_rows == len(fields) and m.batches < len(fields)  # some requests shared a batch


def test_letter_text_releases_only_what_the_letter_keeps():
    from covertune.core.prompt import COVER_LETTER_HEADER, INSTRUCTION

    def stream(outputs):  # the decoded output after each step
        lt = LetterText()
        released = "".join(lt.delta(o) for o in outputs) + lt.delta(outputs[-1], final=True)
        return released, extract_letter(outputs[-1])

    def grow(pieces):
        return [("".join(pieces[:n + 1])) for n in range(len(pieces))]

    cases = [
        grow(["  \n", "Dear", " team", ",\n\n", "I am", "  "]),  # white space stripped at both ends
        grow([INSTRUCTION[:10], INSTRUCTION[10:], "\n\nDear team"]),  # the instruction echoed at the start
        grow(["\n", COVER_LETTER_HEADER[:5], COVER_LETTER_HEADER[5:], "\n", INSTRUCTION, "\nDear Sir"]),  # header
        ["Caf", "Caf\ufffd", "Café", "Café and more"],  # a character split across tokens decodes as U+FFFD first
        grow(["Dear #", "## Team"]),  # text that looked like the header's beginning
    ]
    for outputs in cases:
        streamed, letter = stream(outputs)
        assert streamed == letter and letter, outputs
