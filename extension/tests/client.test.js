// Unit tests for lib/client.js: request bodies, the event-stream parser, error messages, and
// writeLetter/health against a local HTTP server speaking the /v1/cover-letter contract's wire format.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const Client = require("../lib/client.js");

test("server URLs are normalised to an origin; bad ones get a plain error", () => {
  assert.equal(Client.normalizeServerUrl(""), "http://127.0.0.1:8000");
  assert.equal(Client.normalizeServerUrl(" http://localhost:8000/ "), "http://localhost:8000");
  assert.equal(Client.normalizeServerUrl("192.168.1.5:9000/v1"), "http://192.168.1.5:9000");
  assert.equal(Client.originPattern("https://letters.example.org"), "https://letters.example.org/*");
  assert.throws(() => Client.normalizeServerUrl("ftp://host"), /must start with http:\/\/ or https:\/\//);
  assert.throws(() => Client.normalizeServerUrl("http://"), /not a web address/);
});

test("the request body holds the 8 input fields, trimmed, and generation settings only when set", () => {
  const body = Client.requestBody(
    { job_title: " Data Scientist ", hiring_company: "XYZ", preferred_qualifications: "3 years" },
    { applicant_name: "John Smith", skillsets: "Python", extra: "not sent" }, {});
  assert.deepEqual(Object.keys(body).filter((k) => k !== "stream" && k !== "form").sort(), [...Client.INPUT_FIELDS].sort());
  assert.equal(body.job_title, "Data Scientist");
  assert.equal(body.current_experience, "");
  assert.equal(body.stream, true);
  assert.equal(body.extra, undefined);
  assert.equal(body.temperature, undefined);
  assert.equal(body.form, "full");  // a full letter unless the options say otherwise
  assert.equal(Client.requestBody({}, {}, { letter_form: "body" }).form, "body");
  assert.equal(Client.requestBody({}, {}, { letter_form: "letter" }).form, "full");
  const sampled = Client.requestBody({}, {}, { max_new_tokens: "300", temperature: 0.8, top_p: 0.95, seed: 7 });
  assert.deepEqual([sampled.max_new_tokens, sampled.temperature, sampled.top_p, sampled.seed], [300, 0.8, 0.95, 7]);
  const greedy = Client.requestBody({}, {}, { temperature: 0, seed: 7, max_new_tokens: "x" });
  assert.equal(greedy.temperature, undefined);
  assert.equal(greedy.seed, undefined);
  assert.equal(greedy.max_new_tokens, undefined);
});

test("the event-stream parser joins events split across chunks, in any line-ending style", () => {
  const parser = new Client.EventStreamParser();
  assert.deepEqual(parser.push("data: {\"a\""), []);
  assert.deepEqual(parser.push(": 1}\n\ndata: x\r\n\r\n: comment\n\nda"), ["{\"a\": 1}", "x"]);
  assert.deepEqual(parser.push("ta: [DONE]"), []);
  assert.deepEqual(parser.finish(), ["[DONE]"]);
  assert.deepEqual(new Client.EventStreamParser().push("event: x\ndata: a\ndata: b\n\n"), ["a\nb"]);
});

test("error answers become plain messages saying what to do", () => {
  const url = "http://127.0.0.1:8000";
  const auth = Client.httpErrorMessage(401, { error: { message: "missing bearer token", type: "auth", field: null } }, null, url);
  assert.equal(auth.kind, "auth");
  assert.match(auth.message, /API key/);
  const busy = Client.httpErrorMessage(503, { error: { message: "queue full" } }, "3", url);
  assert.equal(busy.kind, "busy");
  assert.match(busy.message, /Try again in 3 seconds/);
  const field = Client.httpErrorMessage(422, { error: { message: "too long", type: "invalid", field: "preferred_qualifications" } }, null, url);
  assert.match(field.message, /too long \(field preferred_qualifications\)/);
  const other = Client.httpErrorMessage(500, null, null, url);
  assert.match(other.message, /HTTP 500/);
});

// ------------------------------------------------------------------ against a local HTTP server

function serve(handler) {
  return new Promise((resolve) => {
    const server = http.createServer(handler);
    server.listen(0, "127.0.0.1", () => resolve({ server, url: "http://127.0.0.1:" + server.address().port }));
  });
}

const sse = (res, events, end = true) => {
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  for (const e of events) res.write("data: " + (typeof e === "string" ? e : JSON.stringify(e)) + "\n\n");
  if (end) res.end();
};

test("writeLetter streams deltas and resolves to the done event; it sends the key and the body", async () => {
  let seen = null;
  const { server, url } = await serve((req, res) => {
    let data = "";
    req.on("data", (c) => { data += c; });
    req.on("end", () => {
      seen = { auth: req.headers.authorization, path: req.url, body: JSON.parse(data) };
      sse(res, [{ type: "delta", text: "Dear " }, { type: "delta", text: "team," },
        { type: "done", letter: "Dear team,", grounding: { name_mentioned: false }, usage: { completion_tokens: 3 }, model: "tiny" }, "[DONE]"]);
    });
  });
  try {
    const deltas = [];
    const done = await Client.writeLetter({ serverUrl: url, apiKey: "k1", body: { job_title: "X", stream: true }, onDelta: (t) => deltas.push(t) });
    assert.deepEqual(deltas, ["Dear ", "team,"]);
    assert.equal(done.letter, deltas.join(""));
    assert.equal(done.model, "tiny");
    assert.deepEqual(seen, { auth: "Bearer k1", path: "/v1/cover-letter", body: { job_title: "X", stream: true } });
  } finally {
    server.close();
  }
});

test("writeLetter reports the candidates' progress, then streams the chosen letter", async () => {
  const { server, url } = await serve((req, res) => {
    req.resume();
    req.on("end", () => sse(res, [{ type: "progress", done: 1, total: 3 }, { type: "progress", done: 3, total: 3 },
      { type: "delta", text: "Dear Acme Corp team,\n\nI apply.\n\nSincerely,\nJane Doe" },
      { type: "done", letter: "Dear Acme Corp team,\n\nI apply.\n\nSincerely,\nJane Doe", grounding: {}, usage: {}, model: "m",
        candidates: { chosen: 2 } }, "[DONE]"]));
  });
  try {
    const seen = [];
    const done = await Client.writeLetter({ serverUrl: url, body: {}, onProgress: (d, t) => seen.push(["progress", d, t]),
      onDelta: (text) => seen.push(["delta", text]) });
    assert.deepEqual(seen.slice(0, 2), [["progress", 1, 3], ["progress", 3, 3]]);
    assert.deepEqual(seen.slice(2), [["delta", done.letter]]);
    assert.equal(done.candidates.chosen, 2);
  } finally {
    server.close();
  }
});

test("writeLetter: an error event, a 401 and a 503 reject with their messages", async () => {
  const { server, url } = await serve((req, res) => {
    req.resume();
    req.on("end", () => {
      if (req.headers.authorization === "Bearer stream-error") {
        sse(res, [{ type: "delta", text: "Dear" }, { type: "error", error: { message: "model crashed" } }]);
      } else if (req.headers.authorization === "Bearer busy") {
        res.writeHead(503, { "Content-Type": "application/json", "Retry-After": "2" });
        res.end(JSON.stringify({ error: { message: "queue full", type: "busy", field: null } }));
      } else {
        res.writeHead(401, { "Content-Type": "application/json" });
        res.end(JSON.stringify({ error: { message: "wrong key", type: "auth", field: null } }));
      }
    });
  });
  try {
    const write = (apiKey) => Client.writeLetter({ serverUrl: url, apiKey, body: {} });
    await assert.rejects(write("stream-error"), { kind: "server", message: /model crashed/ });
    await assert.rejects(write("busy"), { kind: "busy", message: /Try again in 2 seconds/ });
    await assert.rejects(write("wrong"), { kind: "auth", message: /wrong key/ });
  } finally {
    server.close();
  }
});

test("writeLetter: a server that is down says to start covertune serve", async () => {
  const { server, url } = await serve(() => {});
  await new Promise((r) => server.close(r)); // the port is free again: nothing listens there
  await assert.rejects(Client.writeLetter({ serverUrl: url, body: {} }), {
    kind: "down", message: /Start it with `covertune serve`/,
  });
  await assert.rejects(Client.health(url), { kind: "down" });
});

test("writeLetter: a server that stops answering times out with a plain message", async () => {
  const { server, url } = await serve((req, res) => {
    req.resume();
    sse(res, [{ type: "delta", text: "Dear" }], false); // then silence
  });
  try {
    await assert.rejects(Client.writeLetter({ serverUrl: url, body: {}, timeoutS: 0.3 }), {
      kind: "timeout", message: /sent nothing for 0.3 seconds/,
    });
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test("writeLetter: a stream that ends without a done event is an error, not an empty letter", async () => {
  const { server, url } = await serve((req, res) => { req.resume(); sse(res, [{ type: "delta", text: "Dear" }]); });
  try {
    await assert.rejects(Client.writeLetter({ serverUrl: url, body: {} }), { message: /before the letter was finished/ });
  } finally {
    server.close();
  }
});

test("health reads /health, and tells a server that is not covertune apart", async () => {
  const { server, url } = await serve((req, res) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(req.url === "/health" ? JSON.stringify({ status: "ok", model: "tiny" }) : "{}");
  });
  try {
    assert.deepEqual(await Client.health(url), { status: "ok", model: "tiny" });
  } finally {
    server.close();
  }
  const other = await serve((req, res) => { res.writeHead(200, { "Content-Type": "text/html" }); res.end("<html>"); });
  try {
    await assert.rejects(Client.health(other.url), { message: /not a covertune server/ });
  } finally {
    other.server.close();
  }
});

test("every field is clipped to the server's limit before sending, never splitting a character", () => {
  const long = "x".repeat(Client.MAX_FIELD_CHARS - 1) + "\u{1F600}" + "tail";
  const body = Client.requestBody({ job_title: "T".repeat(50000), preferred_qualifications: long },
    { skillsets: "S".repeat(Client.MAX_FIELD_CHARS + 1), applicant_name: "Ann" }, {});
  for (const key of Client.INPUT_FIELDS) assert.ok(body[key].length <= Client.MAX_FIELD_CHARS, key);
  assert.equal(body.job_title.length, Client.MAX_FIELD_CHARS);
  assert.equal(body.preferred_qualifications, "x".repeat(Client.MAX_FIELD_CHARS - 1));  // no lone surrogate
  assert.equal(body.applicant_name, "Ann");
  assert.equal(Client.MAX_FIELD_CHARS, 8000);  // covertune serve's --max-field-chars default
});

test("a server URL with a user name or a remote http:// address gets a warning", () => {
  assert.match(Client.serverUrlWarning("http://user:pw@letters.example.org:8000"), /user name and password/);
  assert.match(Client.serverUrlWarning("http://letters.example.org:8000"), /https:\/\//);
  assert.match(Client.serverUrlWarning("192.168.1.5:9000"), /unencrypted/);
  assert.equal(Client.serverUrlWarning("https://letters.example.org"), "");
  for (const local of ["http://127.0.0.1:8000", "localhost:8000", "http://[::1]:8000", ""]) {
    assert.equal(Client.serverUrlWarning(local), "", local);
  }
});
