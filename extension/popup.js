// The popup: job fields from the active tab, the letter streamed from covertune serve, its grounding check.
// Page and letter text reach the DOM through textContent and form values only.
"use strict";

const Client = globalThis.CovertuneClient;
const Grounding = globalThis.CovertuneGrounding;
const $ = (id) => document.getElementById(id);

const state = { profile: null, settings: {}, writing: null, letter: "", pageUrl: "" };
// the last letter written for a page, kept for the browser session: a popup closes when it loses focus
const DRAFT_KEY = "draft";

function node(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// ------------------------------------------------------------------ reading the job page

/** The tab to read: ?tab=ID when the popup is opened as a page for a given tab, else the active tab. */
async function targetTab() {
  const param = new URLSearchParams(location.search).get("tab");
  if (param !== null && /^\d+$/.test(param)) return { id: Number(param) };
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return tab || null;
}

async function readPage() {
  const tab = await targetTab();
  if (!tab || tab.id === undefined) return null;
  const results = await chrome.scripting.executeScript({
    target: { tabId: tab.id },
    files: ["lib/jobposting.js", "content/read_job.js"],
  });
  return results && results[0] ? results[0].result : null;
}

async function fillFromPage() {
  let page = null;
  try {
    page = await readPage();
  } catch (e) {
    $("source").textContent = "This page cannot be read by extensions: type the job details below.";
    return;
  }
  state.pageUrl = (page && page.url) || "";
  if (await restoreDraft().catch(() => false)) return;
  const job = (page && page.job) || {};
  const selection = (page && page.selection) || "";
  for (const key of Client.JOB_FIELDS) if (job[key]) $(key).value = job[key];
  let note;
  if (job.found) {
    note = "Filled from the page's job posting data.";
    if (!job.preferred_qualifications && selection) {
      $("preferred_qualifications").value = selection;
      note = "Filled from the page's job posting data and your selected text.";
    }
  } else if (selection) {
    $("preferred_qualifications").value = selection;
    note = "No job posting data on this page: your selected text is in Preferred qualifications.";
  } else {
    note = "No job posting data on this page: type the job details, or select the job's text on the page and open covertune again.";
  }
  $("source").textContent = note + " Every field can be edited.";
}

// ------------------------------------------------------------------ the last letter for this page

async function saveDraft(job, result) {
  if (!state.pageUrl || !chrome.storage.session) return;
  await chrome.storage.session.set({ [DRAFT_KEY]: { url: state.pageUrl, job, result } });
}

/** Shows the letter last written for this page (fields as they were then); false when there is none. */
async function restoreDraft() {
  if (!state.pageUrl || !chrome.storage.session) return false;
  const draft = (await chrome.storage.session.get(DRAFT_KEY))[DRAFT_KEY];
  if (!draft || draft.url !== state.pageUrl || !draft.result) return false;
  for (const key of Client.JOB_FIELDS) $(key).value = draft.job[key] || "";
  showResult(draft.result);
  $("source").textContent = "Your last letter for this page. Every field can be edited; Write starts a new letter.";
  return true;
}

// ------------------------------------------------------------------ the letter

function renderLetter(letter, grounding) {
  const box = $("letter");
  box.replaceChildren();
  const segments = grounding
    ? Grounding.markClaims(letter, grounding.unsupported_numbers, grounding.unsupported_orgs)
    : [{ text: letter, kind: null }];
  for (const segment of segments) {
    if (segment.kind) {
      const mark = node("mark", "claim " + segment.kind, segment.text);
      mark.title = segment.kind === "number"
        ? "This number is not in your profile or the job posting"
        : "This organisation is not in your profile or the job posting";
      box.append(mark);
    } else {
      box.append(document.createTextNode(segment.text));
    }
  }
}

function renderGrounding(result) {
  const list = $("checks");
  list.replaceChildren();
  for (const row of Grounding.checklist(result.grounding)) {
    const item = node("li", "check " + row.status);
    item.dataset.check = row.label;
    item.append(node("span", "icon", { ok: "\u2713", bad: "\u2717", warn: "!", na: "\u2013" }[row.status]));
    item.append(node("strong", "", row.label));
    item.append(node("span", "detail", " " + row.detail));
    if (row.items.length) {
      const sub = node("ul", "items");
      for (const text of row.items) sub.append(node("li", "", text));
      item.append(sub);
    }
    list.append(item);
  }
  const usage = result.usage || {};
  $("model").textContent = "Model: " + (result.model || "?") +
    (usage.completion_tokens !== undefined ? " \u00b7 " + usage.completion_tokens + " tokens" : "");
  $("grounding").hidden = false;
}

function showResult(result) {
  state.letter = result.letter;
  $("result").hidden = false;
  renderLetter(result.letter, result.grounding);
  renderGrounding(result);
}

function setWriting(on) {
  $("write").disabled = on;
  $("regenerate").disabled = on;
  $("copy").disabled = on;
  $("stop").hidden = !on;
  $("progress").textContent = on ? "Writing\u2026" : "";
}

async function write(regenerate) {
  if (state.writing) return;
  showError("");
  const job = {};
  for (const key of Client.JOB_FIELDS) job[key] = $(key).value;
  const settings = Object.assign({}, state.settings);
  if (regenerate) {
    // a different letter: sampling with a new seed
    settings.temperature = Number(settings.temperature) > 0 ? settings.temperature : 0.8;
    settings.top_p = 0.95;
    settings.seed = Math.floor(Math.random() * 2 ** 31);
  }
  const body = Client.requestBody(job, state.profile || {}, settings);
  const controller = new AbortController();
  state.writing = controller;
  state.letter = "";
  $("result").hidden = false;
  $("grounding").hidden = true;
  $("letter").replaceChildren();
  $("letter").classList.add("streaming");
  $("copied").textContent = "";
  document.body.dataset.state = "writing";
  setWriting(true);
  try {
    const result = await Client.writeLetter({
      serverUrl: settings.serverUrl, apiKey: settings.apiKey, timeoutS: settings.timeoutS, body,
      signal: controller.signal,
      onProgress: (done, total) => {
        $("progress").textContent = "Writing " + total + " candidate letters and choosing the grounded one\u2026 " +
          done + " of " + total + " written";
      },
      onDelta: (text) => {
        state.letter += text;
        $("letter").append(document.createTextNode(text));
      },
    });
    showResult(result);
    document.body.dataset.state = "done";
    saveDraft(job, { letter: result.letter, grounding: result.grounding, usage: result.usage, model: result.model })
      .catch(() => { /* the letter is shown; only reopening the popup would miss it */ });
  } catch (e) {
    if (!state.letter) $("result").hidden = true;
    if (e.kind !== "cancelled") showError(e instanceof Client.ServerError ? e.message : "Writing failed: " + e.message);
    document.body.dataset.state = "failed";
  } finally {
    $("letter").classList.remove("streaming");
    state.writing = null;
    setWriting(false);
  }
}

async function copyLetter() {
  try {
    await navigator.clipboard.writeText(state.letter);
  } catch (e) {
    // the clipboard API needs focus; select the letter and copy it the old way
    const range = document.createRange();
    range.selectNodeContents($("letter"));
    const selection = getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  $("copied").textContent = "Copied.";
}

// ------------------------------------------------------------------ start

async function start() {
  const stored = await chrome.storage.local.get(["profile", "settings"]);
  state.profile = stored.profile || null;
  state.settings = Object.assign({ serverUrl: Client.DEFAULT_SERVER }, stored.settings || {});
  const name = state.profile && state.profile.applicant_name;
  const line = $("profile-line");
  line.replaceChildren();
  if (name) {
    line.append("Writing as ", node("strong", "", name), " \u00b7 server " + state.settings.serverUrl);
  } else {
    line.classList.add("warn");
    line.textContent = "No profile yet: open \u201cProfile & server\u201d to enter your name, experience and skills.";
  }
  $("open-options").addEventListener("click", () => chrome.runtime.openOptionsPage());
  $("job-form").addEventListener("submit", (event) => { event.preventDefault(); write(false); });
  $("regenerate").addEventListener("click", () => write(true));
  $("stop").addEventListener("click", () => state.writing && state.writing.abort());
  $("copy").addEventListener("click", copyLetter);
  await fillFromPage();
  document.body.dataset.ready = "true";
}

start();
