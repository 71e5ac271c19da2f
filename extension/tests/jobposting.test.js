// Unit tests for lib/jobposting.js: job fields from the JSON-LD shapes job boards publish.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const { extract, htmlToText, parseJson, scriptTexts, MAX_QUALIFICATIONS } = require("../lib/jobposting.js");

const json = (value) => JSON.stringify(value);

test("a plain JobPosting gives title, company and qualifications", () => {
  const out = extract([json({
    "@context": "https://schema.org", "@type": "JobPosting", title: "Senior Data Scientist",
    hiringOrganization: { "@type": "Organization", name: "XYZ Tech Solutions", sameAs: "https://xyz.example" },
    qualifications: "Minimum of 3 years validated experience",
  })]);
  assert.deepEqual(out, {
    found: true, job_title: "Senior Data Scientist", hiring_company: "XYZ Tech Solutions",
    preferred_qualifications: "Minimum of 3 years validated experience", qualifications_from: "qualifications",
  });
});

test("a JobPosting nested in @graph, with its organisation referenced by @id", () => {
  const out = extract([json({
    "@context": "https://schema.org",
    "@graph": [
      { "@type": "WebSite", "@id": "https://jobs.example/#site", name: "Jobs Example" },
      { "@type": "Organization", "@id": "https://jobs.example/#org", name: "Acme Analytics Ltd" },
      { "@type": "WebPage", "@id": "https://jobs.example/job/1", name: "Job page",
        mainEntity: { "@type": "JobPosting", title: "Data Engineer", hiringOrganization: { "@id": "https://jobs.example/#org" },
          skills: "SQL, Spark, Airflow" } },
    ],
  })]);
  assert.equal(out.found, true);
  assert.equal(out.job_title, "Data Engineer");
  assert.equal(out.hiring_company, "Acme Analytics Ltd");
  assert.equal(out.preferred_qualifications, "SQL, Spark, Airflow");
  assert.equal(out.qualifications_from, "skills");
});

test("a top-level array of objects: the JobPosting among them is found", () => {
  const out = extract([json([
    { "@context": "https://schema.org", "@type": "BreadcrumbList", itemListElement: [{ "@type": "ListItem", position: 1, name: "Jobs" }] },
    { "@context": "https://schema.org", "@type": "JobPosting", title: "Nurse", hiringOrganization: "City Hospital" },
  ])]);
  assert.equal(out.job_title, "Nurse");
  assert.equal(out.hiring_company, "City Hospital");
});

test("@type as an array, and full schema.org IRIs as types", () => {
  const a = extract([json({ "@type": ["Thing", "JobPosting"], title: "Chef", hiringOrganization: { name: "Bistro" } })]);
  assert.equal(a.job_title, "Chef");
  assert.equal(a.hiring_company, "Bistro");
  const b = extract([json({ "@type": "http://schema.org/JobPosting", title: "Baker" })]);
  assert.equal(b.job_title, "Baker");
});

test("hiringOrganization as a string, an object, or an array of them", () => {
  assert.equal(extract([json({ "@type": "JobPosting", hiringOrganization: "Plain Co" })]).hiring_company, "Plain Co");
  assert.equal(extract([json({ "@type": "JobPosting", hiringOrganization: { "@type": "Organization", name: "Object Inc" } })]).hiring_company, "Object Inc");
  assert.equal(extract([json({ "@type": "JobPosting", hiringOrganization: [{ name: "First GmbH" }, { name: "Second" }] })]).hiring_company, "First GmbH");
});

test("HTML inside description becomes text, and its requirements section is the qualifications", () => {
  const description =
    "<p>We are &quot;hiring&quot; a backend engineer &amp; mentor.</p>" +
    "<h3>Requirements:</h3><ul><li>5+ years of Python</li><li>Experience with <b>PostgreSQL</b></li></ul>" +
    "<h3>Benefits:</h3><ul><li>Free lunch</li></ul>";
  const out = extract([json({ "@type": "JobPosting", title: "Backend Engineer", description })]);
  assert.equal(out.preferred_qualifications, "- 5+ years of Python\n- Experience with PostgreSQL");
  assert.equal(out.qualifications_from, "description");
});

test("a description without a requirements heading is kept whole, as text", () => {
  const out = extract([json({ "@type": "JobPosting", description: "<p>Join us.</p><p>You know <i>Rust</i>.</p>" })]);
  assert.equal(out.preferred_qualifications, "Join us.\nYou know Rust.");
});

test("a description escaped twice (&lt;p&gt;) is unescaped once", () => {
  assert.equal(htmlToText("&lt;p&gt;Fish &amp;amp; chips&lt;/p&gt;&lt;br&gt;Daily"), "Fish & chips\nDaily");
  // text that only mentions a bracketed word is not unescaped twice
  assert.equal(htmlToText("Works on &lt;Platform&gt; &amp;amp; more"), "Works on <Platform> &amp; more");
});

test("a long description is clipped at a line or sentence end", () => {
  const long = Array.from({ length: 200 }, (_, i) => "Sentence number " + i + " about the job.").join(" ");
  const out = extract([json({ "@type": "JobPosting", description: long })]);
  assert.ok(out.preferred_qualifications.length <= MAX_QUALIFICATIONS);
  assert.ok(out.preferred_qualifications.endsWith("about the job."));
});

test("qualifications, skills and experience requirements are joined; structured values become text", () => {
  const out = extract([json({
    "@type": "JobPosting", title: "Analyst",
    qualifications: "Bachelor's degree", skills: ["Excel", "SQL"],
    experienceRequirements: { "@type": "OccupationalExperienceRequirements", monthsOfExperience: 36 },
    description: "<p>Not used when the fields above exist.</p>",
  })]);
  assert.equal(out.preferred_qualifications, "Bachelor's degree\nExcel\nSQL\n3 years of experience");
  assert.equal(out.qualifications_from, "qualifications, skills, experienceRequirements");
});

test("missing fields come back empty, and a page without a JobPosting finds nothing", () => {
  const out = extract([json({ "@type": "JobPosting" })]);
  assert.deepEqual(out, { found: true, job_title: "", hiring_company: "", preferred_qualifications: "", qualifications_from: "" });
  const none = extract([json({ "@type": "Organization", name: "Acme" })]);
  assert.equal(none.found, false);
  assert.equal(none.job_title, "");
  assert.equal(extract([]).found, false);
});

test("malformed JSON never throws: bad scripts are skipped, good ones still read", () => {
  const bad = ["{", "", "not json at all", "null", "42", "[1, 2, {]", "{\"@type\": \"JobPosting\", \"title\": }"];
  for (const text of bad) assert.equal(extract([text]).found, false, text);
  assert.doesNotThrow(() => extract(undefined));
  assert.doesNotThrow(() => extract([null, 7, {}]));
  const out = extract([...bad, json({ "@type": "JobPosting", title: "Welder" })]);
  assert.equal(out.job_title, "Welder");
});

test("JSON-LD wrapped in an HTML comment or CDATA, or with raw new lines in strings, is still read", () => {
  assert.equal(extract(["<!-- " + json({ "@type": "JobPosting", title: "Pilot" }) + " -->"]).job_title, "Pilot");
  assert.equal(extract(["//<![CDATA[\n" + json({ "@type": "JobPosting", title: "Clerk" }) + "\n//]]>"]).job_title, "Clerk");
  assert.equal(extract(['{"@type": "JobPosting", "title": "Line\nBreak"}']).job_title, "Line Break");
});

test("several scripts on a page: the most complete JobPosting wins, the first on a tie", () => {
  const texts = [
    json({ "@type": "Organization", name: "Board" }),
    json({ "@type": "JobPosting", title: "Teaser" }),
    json({ "@type": "JobPosting", title: "Full", hiringOrganization: "Real Corp", qualifications: "A licence" }),
    json({ "@type": "JobPosting", title: "Other", hiringOrganization: "Other Corp", qualifications: "B" }),
  ];
  const out = extract(texts);
  assert.equal(out.job_title, "Full");
  assert.equal(out.hiring_company, "Real Corp");
});

test("very deep JSON does not overflow the stack; a posting a few levels down is found", () => {
  let deep = "{\"@type\": \"JobPosting\", \"title\": \"Deep\"}";
  for (let i = 0; i < 5000; i++) deep = "{\"child\": " + deep + "}";
  assert.equal(extract([deep]).found, false);
  const shallow = json({ a: { b: { "@type": "JobPosting", title: "Near" } } });
  assert.equal(extract([deep, shallow]).job_title, "Near");
});

test("entities and white space in a title are cleaned", () => {
  const out = extract([json({ "@type": "JobPosting", title: "  R&amp;D   Engineer &#8211; &lt;Platform&gt; ", hiringOrganization: { name: "Caf&eacute; Labs" } })]);
  assert.equal(out.job_title, "R&D Engineer \u2013 <Platform>");
  assert.equal(out.hiring_company, "Caf\u00e9 Labs");
});

test("scriptTexts reads only JSON-LD scripts from a document", () => {
  const scripts = [
    { type: "application/ld+json", textContent: "{\"a\":1}" },
    { type: "application/ld+json", textContent: null },
  ];
  const doc = { querySelectorAll: (selector) => (selector.includes("ld+json") ? scripts : []) };
  assert.deepEqual(scriptTexts(doc), ["{\"a\":1}", ""]);
  assert.deepEqual(scriptTexts(null), []);
});
