// The options page: the applicant's profile and the server settings, kept in chrome.storage.local.
"use strict";

const Client = globalThis.CovertuneClient;
const $ = (id) => document.getElementById(id);
const DEFAULT_ORIGINS = chrome.runtime.getManifest().host_permissions || [];

function say(message, isError) {
  $("status").textContent = isError ? "" : message;
  $("error").textContent = isError ? message : "";
  $("error").hidden = !isError;
}

function readForm() {
  const profile = {};
  for (const key of Client.PROFILE_FIELDS) profile[key] = $(key).value.trim();
  const settings = {
    serverUrl: Client.normalizeServerUrl($("serverUrl").value),
    apiKey: $("apiKey").value.trim(),
    maxNewTokens: $("maxNewTokens").value.trim(),
    temperature: $("temperature").value.trim(),
    letterForm: Client.LETTER_FORMS.includes($("letterForm").value) ? $("letterForm").value : Client.DEFAULT_LETTER_FORM,
    timeoutS: $("timeoutS").value.trim(),
  };
  return { profile, settings };
}

/** Settings as the popup reads them (numbers, or absent). */
function stored(settings) {
  const out = { serverUrl: settings.serverUrl, apiKey: settings.apiKey };
  if (settings.maxNewTokens) out.max_new_tokens = parseInt(settings.maxNewTokens, 10);
  if (settings.temperature) out.temperature = Number(settings.temperature);
  if (settings.timeoutS) out.timeoutS = Number(settings.timeoutS);
  out.letter_form = settings.letterForm;
  out.form = { maxNewTokens: settings.maxNewTokens, temperature: settings.temperature, timeoutS: settings.timeoutS };
  return out;
}

async function save(event) {
  event.preventDefault();
  let form;
  try {
    form = readForm();
  } catch (e) {
    say(e.message, true);
    return;
  }
  // a server outside the default host permissions: ask for it now, while the click still counts as the user's
  const pattern = form.settings.serverUrl + "/*";
  const asking = DEFAULT_ORIGINS.includes(pattern) ? null
    : chrome.permissions.request({ origins: [pattern] }).catch(() => false);
  const warning = Client.serverUrlWarning($("serverUrl").value);
  await chrome.storage.local.set({ profile: form.profile, settings: stored(form.settings) });
  $("serverUrl").value = form.settings.serverUrl;
  say(warning ? "Saved. " + warning : "Saved.", false);
  if (asking && (await asking) === false) {
    say("Saved. Access to " + form.settings.serverUrl + " was not granted: the server must then allow this " +
      "extension's origin (covertune serve does by default).", false);
  }
}

async function test() {
  say("Connecting\u2026", false);
  try {
    const url = Client.normalizeServerUrl($("serverUrl").value);
    const timeoutS = Number($("timeoutS").value) > 0 ? Math.min(Number($("timeoutS").value), 15) : 10;
    const health = await Client.health(url, timeoutS);
    say("Connected: " + url + " serves " + (health.model || "a model") + ".", false);
  } catch (e) {
    say(e.message, true);
  }
}

async function load() {
  const data = await chrome.storage.local.get(["profile", "settings"]);
  const profile = data.profile || {};
  for (const key of Client.PROFILE_FIELDS) $(key).value = profile[key] || "";
  const settings = data.settings || {};
  $("serverUrl").value = settings.serverUrl || Client.DEFAULT_SERVER;
  $("apiKey").value = settings.apiKey || "";
  const form = settings.form || {};
  $("maxNewTokens").value = form.maxNewTokens || "";
  $("temperature").value = form.temperature || "";
  $("timeoutS").value = form.timeoutS || "";
  $("extensionId").textContent = chrome.runtime.id;
  $("pinCommand").textContent = "covertune serve --cors-origins " + location.origin;
  $("letterForm").value = Client.LETTER_FORMS.includes(settings.letter_form) ? settings.letter_form : Client.DEFAULT_LETTER_FORM;
  $("options-form").addEventListener("submit", save);
  $("test").addEventListener("click", test);
  document.body.dataset.ready = "true";
}

load();
