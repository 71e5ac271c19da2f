/*
 * What the popup shows of a letter's grounding check (the server's "grounding" object).
 *
 * A plain script (globalThis.CovertuneGrounding in the extension, module.exports in Node's tests).
 * It returns plain data (text segments, checklist rows); the popup turns them into DOM nodes with
 * textContent only, so no letter or page text is ever parsed as HTML.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.CovertuneGrounding = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  function strings(list) {
    return Array.isArray(list) ? list.filter(function (s) { return typeof s === "string" && s.trim() !== ""; }) : [];
  }

  /**
   * The letter cut into segments {text, kind}: kind is "number" or "org" for a claim the inputs do not
   * support, null for the rest. Claims match as whole words ("5" is not marked inside "2025"),
   * organisations case-insensitively; the longest claim wins where two overlap.
   */
  function markClaims(letter, numbers, orgs) {
    letter = typeof letter === "string" ? letter : "";
    const claims = [];
    for (const n of strings(numbers)) claims.push({ text: n.trim(), kind: "number" });
    for (const o of strings(orgs)) claims.push({ text: o.trim(), kind: "org" });
    if (!letter || !claims.length) return letter ? [{ text: letter, kind: null }] : [];
    claims.sort(function (a, b) { return b.text.length - a.text.length; });
    const kinds = new Map();
    const parts = claims.map(function (c) {
      const key = c.text.toLowerCase();
      if (!kinds.has(key)) kinds.set(key, c.kind);
      return escapeRegExp(c.text);
    });
    const pattern = new RegExp("(?<![\\p{L}\\p{N}_]|\\p{N}[.,])(?:" + parts.join("|") + ")(?![\\p{L}\\p{N}_]|[.,]\\p{N})", "giu");
    const out = [];
    let last = 0;
    let m;
    while ((m = pattern.exec(letter)) !== null) {
      if (m[0] === "") { pattern.lastIndex += 1; continue; }
      if (m.index > last) out.push({ text: letter.slice(last, m.index), kind: null });
      out.push({ text: m[0], kind: kinds.get(m[0].toLowerCase()) || "org" });
      last = m.index + m[0].length;
    }
    if (last < letter.length) out.push({ text: letter.slice(last), kind: null });
    return out;
  }

  function mention(label, value, what) {
    if (value === true) return { label: label, status: "ok", detail: what + " is in the letter" };
    if (value === false) return { label: label, status: "bad", detail: what + " is not in the letter" };
    return { label: label, status: "na", detail: "no " + what.toLowerCase() + " given" };
  }

  /** The checklist rows {label, status: "ok"|"bad"|"warn"|"na", detail, items} for a grounding object. */
  function checklist(grounding) {
    const g = grounding && typeof grounding === "object" ? grounding : {};
    const rows = [
      mention("Your name", g.name_mentioned, "Your name"),
      mention("Company", g.company_mentioned, "The company"),
      mention("Job title", g.job_title_mentioned, "The job title"),
    ];
    const total = Number(g.skills_total);
    const mentioned = Number(g.skills_mentioned);
    if (Number.isFinite(total) && total > 0) {
      const missing = strings(g.skills_missing);
      rows.push({
        label: "Skills", status: mentioned >= total ? "ok" : mentioned > 0 ? "warn" : "bad",
        detail: mentioned + " of " + total + " of your skills used" + (missing.length ? "; not used:" : ""), items: missing,
      });
    } else {
      rows.push({ label: "Skills", status: "na", detail: "no skills given" });
    }
    const numbers = strings(g.unsupported_numbers);
    rows.push(numbers.length
      ? { label: "Numbers", status: "bad", detail: "not in your profile or the job posting (check them):", items: numbers }
      : { label: "Numbers", status: "ok", detail: "every number comes from your profile or the job posting" });
    const orgs = strings(g.unsupported_orgs);
    rows.push(orgs.length
      ? { label: "Organisations", status: "bad", detail: "not in your profile or the job posting (check them):", items: orgs }
      : { label: "Organisations", status: "ok", detail: "no organisation the inputs do not name" });
    for (const row of rows) if (!row.items) row.items = [];
    return rows;
  }

  return { markClaims: markClaims, checklist: checklist };
});
