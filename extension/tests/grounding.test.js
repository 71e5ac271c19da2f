// Unit tests for lib/grounding.js: marking unsupported claims in a letter, the checklist rows.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { markClaims, checklist } = require("../lib/grounding.js");

const marked = (segments) => segments.filter((s) => s.kind).map((s) => [s.text, s.kind]);

test("segments put back together are the letter, unchanged", () => {
  const letter = "Dear team,\n\nI led 12 people at Initech Corp for 3 years.\n";
  const segments = markClaims(letter, ["12"], ["Initech Corp"]);
  assert.equal(segments.map((s) => s.text).join(""), letter);
  assert.deepEqual(marked(segments), [["12", "number"], ["Initech Corp", "org"]]);
});

test("numbers match whole tokens only: 5 is not marked inside 2025, 5.5 or 15", () => {
  const segments = markClaims("In 2025 I grew sales 5.5% and 15 times, 5 in all.", ["5"], []);
  assert.deepEqual(marked(segments), [["5", "number"]]);
  assert.equal(segments.find((s) => s.kind).text, "5");
  assert.ok(segments.map((s) => s.text).join("").includes("5 in all"));
});

test("the longest claim wins where claims overlap; organisations match in any case", () => {
  const segments = markClaims("At Google Cloud and at google we shipped.", [], ["Google", "Google Cloud"]);
  assert.deepEqual(marked(segments), [["Google Cloud", "org"], ["google", "org"]]);
});

test("claims with regular-expression characters are matched literally", () => {
  const segments = markClaims("Cut costs by $1.5M (20%) at A+B Ltd.", ["$1.5M", "20%"], ["A+B Ltd"]);
  assert.deepEqual(marked(segments), [["$1.5M", "number"], ["20%", "number"], ["A+B Ltd", "org"]]);
});

test("no claims, an empty letter, or bad input give plain text", () => {
  assert.deepEqual(markClaims("Hello", [], []), [{ text: "Hello", kind: null }]);
  assert.deepEqual(markClaims("Hello", null, undefined), [{ text: "Hello", kind: null }]);
  assert.deepEqual(markClaims("", ["5"], []), []);
  assert.deepEqual(markClaims(null, ["5"], []), []);
  assert.deepEqual(markClaims("Hello <b>", ["", "  ", 7], []), [{ text: "Hello <b>", kind: null }]);
});

test("checklist rows follow the grounding object: true, false and null mentions", () => {
  const rows = checklist({
    name_mentioned: true, company_mentioned: false, job_title_mentioned: null,
    skills_total: 4, skills_mentioned: 1, skills_coverage: 0.25, skills_missing: ["SQL", "Go", "R"],
    numbers_claimed: ["5", "12"], unsupported_numbers: ["12"], unsupported_orgs: [],
  });
  const by = Object.fromEntries(rows.map((r) => [r.label, r]));
  assert.equal(by["Your name"].status, "ok");
  assert.equal(by.Company.status, "bad");
  assert.equal(by["Job title"].status, "na");
  assert.equal(by.Skills.status, "warn");
  assert.match(by.Skills.detail, /^1 of 4 /);
  assert.deepEqual(by.Skills.items, ["SQL", "Go", "R"]);
  assert.equal(by.Numbers.status, "bad");
  assert.deepEqual(by.Numbers.items, ["12"]);
  assert.equal(by.Organisations.status, "ok");
  assert.deepEqual(by.Organisations.items, []);
});

test("checklist: all skills used, none given, and a missing grounding object", () => {
  const all = checklist({ skills_total: 2, skills_mentioned: 2, skills_missing: [] });
  assert.equal(all.find((r) => r.label === "Skills").status, "ok");
  const none = checklist({ skills_total: 0, skills_mentioned: 0, skills_coverage: null });
  assert.equal(none.find((r) => r.label === "Skills").status, "na");
  const empty = checklist(undefined);
  assert.deepEqual(empty.map((r) => r.label), ["Your name", "Company", "Job title", "Skills", "Numbers", "Organisations"]);
  assert.ok(empty.slice(0, 4).every((r) => r.status === "na"));
});
