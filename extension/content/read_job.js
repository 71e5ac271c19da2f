// Injected into the job page (after lib/jobposting.js) by the popup through chrome.scripting.executeScript.
// Its value, the last expression, is what the popup receives: the JobPosting fields, the selected text and
// the page's address (the popup keeps the last letter written for it).
(function () {
  let selection = "";
  try {
    selection = String(window.getSelection ? window.getSelection() : "").trim().slice(0, 4000);
  } catch (e) { /* no selection */ }
  const lib = globalThis.CovertuneJobPosting;
  const job = lib ? lib.extract(lib.scriptTexts(document)) : { found: false };
  return { job: job, selection: selection, url: String(location.href).split("#")[0] };
})();
