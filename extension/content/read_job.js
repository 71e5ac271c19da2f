// Injected into the job page (after lib/jobposting.js) by the popup through chrome.scripting.executeScript.
// Its value, the last expression, is what the popup receives: the JobPosting fields and the selected text.
(function () {
  let selection = "";
  try {
    selection = String(window.getSelection ? window.getSelection() : "").trim().slice(0, 4000);
  } catch (e) { /* no selection */ }
  const lib = globalThis.CovertuneJobPosting;
  const job = lib ? lib.extract(lib.scriptTexts(document)) : { found: false };
  return { job: job, selection: selection, title: String(document.title || "").slice(0, 300) };
})();
