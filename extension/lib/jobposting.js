/*
 * Job fields from a page's schema.org JobPosting JSON-LD.
 *
 * A plain script with no dependencies: injected into a job page by the popup (it then sets
 * globalThis.CovertuneJobPosting) and loaded by Node's test runner (module.exports). Nothing in it
 * throws on bad input: malformed JSON, odd shapes and missing fields give empty strings.
 *
 * extract(texts) takes the text of every <script type="application/ld+json"> on a page and returns
 *   {found, job_title, hiring_company, preferred_qualifications, qualifications_from}
 * Preferred qualifications join the posting's qualifications, skills, experienceRequirements and
 * educationRequirements; without any of them they are the requirements part of its description.
 * qualifications_from names the JobPosting properties they came from.
 */
(function (root, factory) {
  const api = factory();
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.CovertuneJobPosting = api;
})(typeof globalThis !== "undefined" ? globalThis : this, function () {
  "use strict";

  // longest text put into the preferred-qualifications field (the training data's longest is ~850)
  const MAX_QUALIFICATIONS = 1200;
  const MAX_DEPTH = 12;
  const MAX_NODES = 5000;

  const ENTITIES = {
    amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " ", ndash: "\u2013", mdash: "\u2014",
    hellip: "\u2026", rsquo: "\u2019", lsquo: "\u2018", rdquo: "\u201d", ldquo: "\u201c", bull: "\u2022",
    middot: "\u00b7", copy: "\u00a9", reg: "\u00ae", trade: "\u2122", euro: "\u20ac", pound: "\u00a3",
    eacute: "\u00e9", egrave: "\u00e8", aacute: "\u00e1", agrave: "\u00e0", iacute: "\u00ed", oacute: "\u00f3",
    uacute: "\u00fa", auml: "\u00e4", ouml: "\u00f6", uuml: "\u00fc", szlig: "\u00df", ccedil: "\u00e7", ntilde: "\u00f1",
  };

  function decodeEntities(text) {
    return text.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, function (whole, name) {
      if (name[0] === "#") {
        const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
        if (!Number.isFinite(code) || code <= 0 || code > 0x10ffff) return whole;
        try { return String.fromCodePoint(code); } catch (e) { return whole; }
      }
      const hit = ENTITIES[name] !== undefined ? ENTITIES[name] : ENTITIES[name.toLowerCase()];
      return hit === undefined ? whole : hit;
    });
  }

  /** Plain text from an HTML fragment: block elements become line breaks, list items "- " lines. */
  function htmlToText(html) {
    if (typeof html !== "string") return "";
    let text = html;
    // descriptions are often HTML-escaped twice ("&lt;p&gt;"): unescape once when no real tag is present
    if (!/<[a-z!\/]/i.test(text) && /&lt;\/?(p|br|ul|ol|li|div|h[1-6]|b|i|em|strong|span)\b/i.test(text)) text = decodeEntities(text);
    text = text
      .replace(/<!--[\s\S]*?-->/g, "")
      .replace(/<(script|style|template)\b[\s\S]*?<\/\1\s*>/gi, "")
      .replace(/<li\b[^>]*>/gi, "\n- ")
      .replace(/<br\s*\/?>/gi, "\n")
      .replace(/<\/?(p|div|ul|ol|li|h[1-6]|tr|table|section|article|header|footer|blockquote|pre|dl|dt|dd)\b[^>]*>/gi, "\n")
      .replace(/<[^>]*>/g, "");
    text = decodeEntities(text).replace(/\r\n?/g, "\n").replace(/[\t\f\v \u00a0]+/g, " ");
    return text
      .split("\n")
      .map(function (line) { return line.trim(); })
      .filter(function (line) { return line !== ""; })
      .join("\n")
      .trim();
  }

  /** JSON.parse that never throws: also tries the text without comment/CDATA wrappers and raw control characters. */
  function parseJson(text) {
    if (typeof text !== "string") return undefined;
    const attempts = [text];
    const unwrapped = text
      .replace(/^\s*(<!--|\/\/\s*<!\[CDATA\[|<!\[CDATA\[)/, "")
      .replace(/(-->|\/\/\s*\]\]>|\]\]>)\s*$/, "");
    attempts.push(unwrapped);
    attempts.push(unwrapped.replace(/[\u0000-\u001f]+/g, " ")); // raw new lines inside strings
    for (const attempt of attempts) {
      try { return JSON.parse(attempt); } catch (e) { /* next attempt */ }
    }
    return undefined;
  }

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function typesOf(node) {
    const raw = node["@type"] !== undefined ? node["@type"] : node.type;
    const list = Array.isArray(raw) ? raw : [raw];
    return list
      .filter(function (t) { return typeof t === "string"; })
      .map(function (t) { return t.replace(/^.*[\/#:]/, ""); }); // "http://schema.org/JobPosting", "schema:JobPosting"
  }

  /** Every object in a parsed JSON-LD value, depth first, in document order (arrays, @graph, nesting). */
  function walk(value, visit) {
    let count = 0;
    const seen = new Set();
    (function go(node, depth) {
      if (depth > MAX_DEPTH || count > MAX_NODES || node === null || typeof node !== "object") return;
      if (seen.has(node)) return;
      seen.add(node);
      count += 1;
      if (Array.isArray(node)) {
        for (const item of node) go(item, depth + 1);
        return;
      }
      visit(node);
      for (const key of Object.keys(node)) go(node[key], depth + 1);
    })(value, 0);
  }

  function byId(nodes) {
    const map = new Map();
    for (const node of nodes) if (typeof node["@id"] === "string" && !map.has(node["@id"])) map.set(node["@id"], node);
    return map;
  }

  /** The text of a JSON-LD value: a string, a number, an object's name/description, a list joined by new lines. */
  function textOf(value, ids, depth) {
    depth = depth || 0;
    if (depth > 4 || value === null || value === undefined) return "";
    if (typeof value === "string") return htmlToText(value);
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    if (Array.isArray(value)) {
      return value.map(function (v) { return textOf(v, ids, depth + 1); }).filter(Boolean).join("\n");
    }
    if (!isObject(value)) return "";
    if (typeof value["@id"] === "string" && Object.keys(value).length === 1 && ids.has(value["@id"])) {
      const target = ids.get(value["@id"]);
      if (target !== value) return textOf(target, ids, depth + 1);
    }
    if (value["@value"] !== undefined) return textOf(value["@value"], ids, depth + 1);
    const months = Number(value.monthsOfExperience);
    if (Number.isFinite(months) && months > 0) {
      const span = months % 12 === 0 ? months / 12 + (months === 12 ? " year" : " years") : months + " months";
      const extra = textOf(value.description, ids, depth + 1);
      return span + " of experience" + (extra ? ": " + extra : "");
    }
    for (const key of ["name", "credentialCategory", "description", "text"]) {
      const text = textOf(value[key], ids, depth + 1);
      if (text) return text;
    }
    return "";
  }

  const SECTION_START = /^(?:[-*\u2022]\s*)?(?:(?:preferred|required|desired|minimum|basic|key|your|additional)\s+)*(?:qualifications?|requirements?|skills(?: and experience)?|experience|what you(?:'|\u2019)?ll bring|what you bring|what we(?:'|\u2019)?re looking for|who you are|about you)\b[^.\n]{0,40}:?$/i;

  /** The qualifications part of a job description: the lines after a heading such as "Requirements:". */
  function qualificationsFromDescription(text) {
    const lines = text.split("\n");
    const start = lines.findIndex(function (line) { return line.length <= 60 && SECTION_START.test(line); });
    if (start < 0) return clip(text);
    const body = [];
    for (let i = start + 1; i < lines.length; i++) {
      const line = lines[i];
      const heading = line !== "" && line.length <= 60 && !/^[-*\u2022]/.test(line) && /:$/.test(line);
      if (heading && body.length) break;
      if (line !== "") body.push(line);
    }
    return body.length ? clip(body.join("\n")) : clip(text);
  }

  function clip(text) {
    if (text.length <= MAX_QUALIFICATIONS) return text;
    const cut = text.slice(0, MAX_QUALIFICATIONS);
    const end = Math.max(cut.lastIndexOf("\n"), cut.lastIndexOf(". "));
    return (end > MAX_QUALIFICATIONS / 2 ? cut.slice(0, end + 1) : cut).trim();
  }

  function score(posting) {
    return ["title", "hiringOrganization", "qualifications", "skills", "experienceRequirements", "description"]
      .filter(function (key) { return posting[key] !== undefined && posting[key] !== null && posting[key] !== ""; }).length;
  }

  const EMPTY = Object.freeze({ found: false, job_title: "", hiring_company: "", preferred_qualifications: "", qualifications_from: "" });

  /** Job fields from the texts of a page's JSON-LD scripts (the most complete JobPosting wins, ties: the first). */
  function extract(texts) {
    try {
      const nodes = [];
      for (const text of Array.isArray(texts) ? texts : [texts]) {
        const parsed = parseJson(text);
        if (parsed !== undefined) walk(parsed, function (node) { nodes.push(node); });
      }
      const ids = byId(nodes);
      const postings = nodes.filter(function (node) { return typesOf(node).indexOf("JobPosting") >= 0; });
      if (!postings.length) return Object.assign({}, EMPTY);
      let posting = postings[0];
      for (const candidate of postings) if (score(candidate) > score(posting)) posting = candidate;

      const out = Object.assign({}, EMPTY, { found: true });
      out.job_title = textOf(posting.title, ids).replace(/\s+/g, " ") || textOf(posting.name, ids).replace(/\s+/g, " ");
      out.hiring_company = textOf(posting.hiringOrganization, ids).split("\n")[0].replace(/\s+/g, " ");
      const parts = [];
      const from = [];
      for (const key of ["qualifications", "skills", "experienceRequirements", "educationRequirements"]) {
        const text = textOf(posting[key], ids);
        if (text && parts.indexOf(text) < 0) {
          parts.push(text);
          from.push(key);
        }
      }
      if (parts.length) {
        out.preferred_qualifications = clip(parts.join("\n"));
        out.qualifications_from = from.join(", ");
      }
      if (!out.preferred_qualifications) {
        const description = textOf(posting.description, ids);
        if (description) {
          out.preferred_qualifications = qualificationsFromDescription(description);
          out.qualifications_from = "description";
        }
      }
      return out;
    } catch (e) {
      return Object.assign({}, EMPTY);
    }
  }

  /** In a page: the texts of its JSON-LD scripts. */
  function scriptTexts(doc) {
    try {
      return Array.from(doc.querySelectorAll('script[type="application/ld+json" i]')).map(function (s) { return s.textContent || ""; });
    } catch (e) {
      return [];
    }
  }

  return { extract: extract, htmlToText: htmlToText, parseJson: parseJson, scriptTexts: scriptTexts, MAX_QUALIFICATIONS: MAX_QUALIFICATIONS };
});
