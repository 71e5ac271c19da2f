/*
 * The covertune server's /v1/cover-letter API, as the popup and options page use it.
 *
 * A plain script (globalThis.CovertuneClient in the extension, module.exports in Node's tests).
 * Every failure becomes a ServerError whose message says, in plain words, what to do next.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.CovertuneClient = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  const DEFAULT_SERVER = "http://127.0.0.1:8000";
  const MAX_FIELD_CHARS = 8000; // covertune serve's --max-field-chars default: longer fields get 422
  const DEFAULT_TIMEOUT_S = 120;
  const JOB_FIELDS = ["job_title", "hiring_company", "preferred_qualifications"];
  const PROFILE_FIELDS = ["applicant_name", "current_experience", "past_experience", "skillsets", "qualifications"];
  // the order of covertune.core.records.INPUT_FIELDS
  const INPUT_FIELDS = ["job_title", "preferred_qualifications", "hiring_company", "applicant_name",
    "past_experience", "current_experience", "skillsets", "qualifications"];
  // covertune's letter forms (covertune.letter_form.FORMS); the extension asks for a full letter by default
  const LETTER_FORMS = ["full", "body", "auto"];
  const DEFAULT_LETTER_FORM = "full";

  class ServerError extends Error {
    constructor(message, kind, status) {
      super(message);
      this.name = "ServerError";
      this.kind = kind; // "down" | "auth" | "busy" | "timeout" | "field" | "server" | "url"
      this.status = status || null;
    }
  }

  /** "http://host:port" from what a user typed (a trailing slash or path is dropped); throws ServerError. */
  function normalizeServerUrl(text) {
    const raw = String(text || "").trim() || DEFAULT_SERVER;
    let url;
    try {
      url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : "http://" + raw);
    } catch (e) {
      throw new ServerError("The server URL \"" + raw + "\" is not a web address: use one like " + DEFAULT_SERVER + ".", "url");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ServerError("The server URL must start with http:// or https:// (got " + url.protocol + ").", "url");
    }
    return url.origin;
  }

  /** A warning for a server URL that leaks or drops what it holds, or "": a user name and password in it are
   * not sent (the API key field is), and over http:// to another machine the key and letters travel unencrypted. */
  function serverUrlWarning(text) {
    const raw = String(text || "").trim() || DEFAULT_SERVER;
    let url;
    try {
      url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : "http://" + raw);
    } catch (e) {
      return "";
    }
    const notes = [];
    if (url.username || url.password) {
      notes.push("The user name and password in the server URL are not sent; put the key in the API key field.");
    }
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const loopback = host === "localhost" || host === "::1" || /^127\./.test(host);
    if (url.protocol === "http:" && !loopback) {
      notes.push("The server is on another machine over http://: the API key and your letters travel unencrypted. " +
        "Use https:// (a TLS proxy in front of covertune serve).");
    }
    return notes.join(" ");
  }

  /** The match pattern a host permission for this server needs ("http://127.0.0.1:8000/*"). */
  function originPattern(serverUrl) {
    return normalizeServerUrl(serverUrl) + "/*";
  }

  /** ``text`` cut to ``MAX_FIELD_CHARS`` UTF-16 code units (Python counts characters: never more), without
   * splitting a character in two. */
  function clip(text) {
    if (text.length <= MAX_FIELD_CHARS) return text;
    let cut = text.slice(0, MAX_FIELD_CHARS);
    const last = cut.charCodeAt(cut.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) cut = cut.slice(0, -1);
    return cut;
  }

  /** The request body: the 8 input fields from the job and the profile (each clipped to the server's limit),
   * plus generation settings. */
  function requestBody(job, profile, settings) {
    const body = {};
    for (const key of JOB_FIELDS) body[key] = clip(String((job && job[key]) || "").trim());
    for (const key of PROFILE_FIELDS) body[key] = clip(String((profile && profile[key]) || "").trim());
    settings = settings || {};
    const maxTokens = parseInt(settings.max_new_tokens, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_new_tokens = maxTokens;
    const temperature = Number(settings.temperature);
    if (settings.temperature !== undefined && settings.temperature !== "" && Number.isFinite(temperature) && temperature > 0) {
      body.temperature = temperature;
      if (settings.top_p !== undefined && Number.isFinite(Number(settings.top_p))) body.top_p = Number(settings.top_p);
      if (Number.isInteger(settings.seed)) body.seed = settings.seed;
    }
    body.form = LETTER_FORMS.includes(settings.letter_form) ? settings.letter_form : DEFAULT_LETTER_FORM;
    body.stream = true;
    return body;
  }

  /** Splits a text/event-stream into its events' data (joined data lines), across chunk boundaries. */
  class EventStreamParser {
    constructor() { this.buffer = ""; }
    /** Feeds decoded text; returns the data strings of the events it completed. */
    push(text) {
      this.buffer += text.replace(/\r\n?/g, "\n");
      const out = [];
      let end;
      while ((end = this.buffer.indexOf("\n\n")) >= 0) {
        const block = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 2);
        const data = block.split("\n")
          .filter(function (line) { return line.startsWith("data:"); })
          .map(function (line) { return line.slice(5).replace(/^ /, ""); });
        if (data.length) out.push(data.join("\n"));
      }
      return out;
    }
    /** The data of a last event the stream ended without a blank line after. */
    finish() {
      const rest = this.buffer;
      this.buffer = "";
      return rest.trim() ? this.push(rest + "\n\n") : [];
    }
  }

  function retryAfterSeconds(value) {
    const seconds = parseInt(value, 10);
    return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
  }

  /** The plain message for an HTTP error answer (status, the JSON error body if any, Retry-After). */
  function httpErrorMessage(status, payload, retryAfter, serverUrl) {
    const error = payload && payload.error ? payload.error : {};
    const detail = typeof error.message === "string" && error.message ? error.message : "";
    if (status === 401 || status === 403) {
      return new ServerError("The server at " + serverUrl + " refused the API key" + (detail ? " (" + detail + ")" : "") +
        ". Enter the key the server was started with under Options \u2192 API key.", "auth", status);
    }
    if (status === 503) {
      const wait = retryAfterSeconds(retryAfter);
      return new ServerError("The server is busy writing other letters. Try again " +
        (wait !== null ? "in " + wait + " second" + (wait === 1 ? "" : "s") : "in a moment") + ".", "busy", status);
    }
    if (status === 422 || status === 413) {
      const field = typeof error.field === "string" && error.field ? error.field : null;
      return new ServerError((detail || "The server refused the request") +
        (field ? " (field " + field + ")" : "") + ". Shorten that text and write again.", "field", status);
    }
    if (status === 404) {
      return new ServerError("The server at " + serverUrl + " has no cover-letter endpoint here" + (detail ? " (" + detail + ")" : "") +
        ". Check the server URL under Options; it should be a running `covertune serve`.", "server", status);
    }
    return new ServerError("The server answered with an error (HTTP " + status + (detail ? ": " + detail : "") +
      "). See the terminal running `covertune serve`.", "server", status);
  }

  function downError(serverUrl) {
    return new ServerError("Cannot reach the covertune server at " + serverUrl +
      ". Start it with `covertune serve` (or check the server URL under Options).", "down");
  }

  function timeoutError(seconds) {
    return new ServerError("The server sent nothing for " + seconds + " seconds, so writing stopped. " +
      "It may still be loading the model or busy: try again, or raise the timeout under Options.", "timeout");
  }

  /**
   * Writes a letter with a streamed POST /v1/cover-letter. onProgress(done, total) gets each progress event
   * (the server writing several candidates, one of which it chooses); onDelta(text) gets each piece of the
   * letter as it comes; resolves to the "done" event ({letter, grounding, usage, model}); rejects with a
   * ServerError.
   * timeoutS is the longest wait for the next piece of the answer; signal (optional) cancels.
   */
  async function writeLetter(options) {
    const serverUrl = normalizeServerUrl(options.serverUrl);
    const timeoutS = Number(options.timeoutS) > 0 ? Number(options.timeoutS) : DEFAULT_TIMEOUT_S;
    const fetchImpl = options.fetch || fetch;
    const controller = new AbortController();
    let timedOut = false;
    let timer = null;
    const arm = function () {
      clearTimeout(timer);
      timer = setTimeout(function () { timedOut = true; controller.abort(); }, timeoutS * 1000);
    };
    if (options.signal) options.signal.addEventListener("abort", function () { controller.abort(); });
    const headers = { "Content-Type": "application/json", "Accept": "text/event-stream" };
    if (options.apiKey) headers.Authorization = "Bearer " + options.apiKey;

    arm();
    try {
      let response;
      try {
        response = await fetchImpl(serverUrl + "/v1/cover-letter", {
          method: "POST", headers: headers, body: JSON.stringify(options.body), signal: controller.signal,
        });
      } catch (e) {
        if (timedOut) throw timeoutError(timeoutS);
        if (controller.signal.aborted) throw new ServerError("Stopped.", "cancelled");
        throw downError(serverUrl);
      }
      if (!response.ok) {
        let payload = null;
        try { payload = await response.json(); } catch (e) { /* not JSON */ }
        throw httpErrorMessage(response.status, payload, response.headers.get("Retry-After"), serverUrl);
      }
      const type = response.headers.get("Content-Type") || "";
      if (!type.includes("text/event-stream")) {
        // a server that ignores "stream": one JSON answer
        const payload = await response.json();
        if (typeof payload.letter !== "string") throw new ServerError("The server's answer has no letter.", "server");
        if (options.onDelta) options.onDelta(payload.letter);
        return payload;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new EventStreamParser();
      let done = null;
      const handle = function (data) {
        if (data === "[DONE]") return true;
        let event;
        try { event = JSON.parse(data); } catch (e) { return false; }
        if (event.type === "delta" && typeof event.text === "string") {
          if (options.onDelta) options.onDelta(event.text);
        } else if (event.type === "progress" && Number.isInteger(event.done) && Number.isInteger(event.total)) {
          if (options.onProgress) options.onProgress(event.done, event.total);
        } else if (event.type === "done") {
          done = event;
        } else if (event.type === "error") {
          const message = event.error && event.error.message ? event.error.message : "unknown error";
          throw new ServerError("The server stopped while writing: " + message + ". Write again.", "server");
        }
        return false;
      };
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (timedOut) throw timeoutError(timeoutS);
          if (controller.signal.aborted) throw new ServerError("Stopped.", "cancelled");
          throw new ServerError("The connection to the server broke while writing. Write again.", "down");
        }
        arm();
        const texts = chunk.done ? parser.finish() : parser.push(decoder.decode(chunk.value, { stream: true }));
        let finished = false;
        for (const data of texts) finished = handle(data) || finished;
        if (finished || chunk.done) break; // the server closes the stream after [DONE]
      }
      if (!done) throw new ServerError("The server ended the answer before the letter was finished. Write again.", "server");
      return done;
    } finally {
      clearTimeout(timer);
    }
  }

  /** GET /health: resolves to {status, model}; rejects with a ServerError. */
  async function health(serverUrl, timeoutS, fetchImpl) {
    const url = normalizeServerUrl(serverUrl);
    const controller = new AbortController();
    const seconds = Number(timeoutS) > 0 ? Number(timeoutS) : 10;
    const timer = setTimeout(function () { controller.abort(); }, seconds * 1000);
    try {
      let response;
      try {
        response = await (fetchImpl || fetch)(url + "/health", { signal: controller.signal });
      } catch (e) {
        throw controller.signal.aborted ? timeoutError(seconds) : downError(url);
      }
      let payload = null;
      try { payload = await response.json(); } catch (e) { /* not JSON */ }
      if (!response.ok) throw httpErrorMessage(response.status, payload, response.headers.get("Retry-After"), url);
      if (!payload || payload.status !== "ok") {
        throw new ServerError("Something answers at " + url + ", but it is not a covertune server. Check the server URL.", "server");
      }
      return payload;
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    DEFAULT_SERVER, DEFAULT_TIMEOUT_S, JOB_FIELDS, PROFILE_FIELDS, INPUT_FIELDS, MAX_FIELD_CHARS, LETTER_FORMS,
    DEFAULT_LETTER_FORM, ServerError, normalizeServerUrl, serverUrlWarning, originPattern, requestBody, EventStreamParser,
    httpErrorMessage,
    writeLetter, health,
  };
});
