"""Grounding: does a letter use the applicant's facts, and does it invent any?

The inputs come from the ``prompt`` column, parsed back into the record's fields (covertune.core.prompt's
``parse_prompt`` inverts its ``render_prompt``; a field rendered as "None" parses as empty). Every rule
is a documented heuristic, case-insensitive unless said otherwise; phrases match whole words only, with
spaces and hyphens interchangeable ("problem-solving" = "problem solving"; a one-word skill like
"problemsolving" also matches "problem-solving"); phrases of one or two characters ("R", "Go") match
case-sensitively.

Mentions (1.0 / 0.0; NaN when the input field is empty):

- ``name_mentioned``: the applicant's full name, or its first and last words both present.
- ``company_mentioned``: the hiring company, or the company without a legal suffix ("XYZ Corp" for
  "XYZ Corporation": Inc, Corp, Corporation, Company, Co, LLC, Ltd, Limited, PLC, GmbH).
- ``job_title_mentioned``: the job title (white space collapsed, "&" = "and", "Sr."/"Jr." = "Senior"/
  "Junior"), or the title without a parenthesised part.
- skills: ``Skillsets`` is split on commas, semicolons, new lines, " and ", "&", "such as" and
  "including" (not inside parentheses); labels like "Hard Skills:" and lead-ins like "proficient in",
  "strong knowledge of", "experience with" are dropped, and a trailing "skills" is optional. A skill
  written "X (A, B)" counts as mentioned if X, A or B appears. ``skills_coverage`` = mentioned / total.

Claims that the inputs do not support:

- numbers: digits (``5``, ``5+``, ``3.5``, ``1,000``, ``20%``, ``$1``), digits with a multiplier
  (``19k``, ``$5M``, ``2.5B`` after "$", ``10x``), spelled-out numbers two to ninety-nine followed by a
  unit, up to two lower-case words apart ("five years", "ten percent", "eleven new hires", "thirteen
  junior developers"; the units are ``UNITS``), and "a decade", "two decades", "half a decade", "a
  dozen". Not claims, so ignored: other digits glued to letters (J2EE, 5G, 4K, word2vec, Lumen5),
  "32-bit", dates (June 5, 2023; 5/6/2023; 2023-06-05; May 2021), phone numbers, "24/7", list markers
  ("1." at a line start, "(2)", "Question 1", "Step 2"), placeholders in [brackets]. A number is supported if its value appears anywhere in the inputs, or is the sum of two
  or more numbers from the applicant's resume (current and past experience, skills, qualifications):
  "3 years" and "4 years" support "7 years"; they do not support "over 5 years". Job-description
  numbers (requirements such as "4+ years") support only themselves, calendar years (1900-2099) only
  themselves; neither is added up. ``unsupported_numbers_list`` holds the numbers as written.
- organisations: a run of capitalised words (allowing "of", "&", "for", "the" inside; "and" ends a run)
  that contains an organisation word (Inc, Corp, Corporation, Company, LLC, Ltd, Bank, University,
  College, Institute, Labs, Technologies, Solutions, Consulting, Group, Partners, Holdings, ...), or
  any capitalised run right after a cue ("at Google"): "at", "joined", "joining", "worked/employed/
  hired/recruited/contracted/volunteered for/by/to", "consultant for/to", "internship/interned/
  partnered/employed/tenure/career/years with", "intern/internship at", and the runs listed right after such a run ("at Google, Amazon and Meta"). Leading
  sentence words (At, The, In, My, ...), a trailing "'s" and the pronoun "I" are dropped; runs inside
  [placeholders] and runs with words like "Level" or "Scale" are skipped. An organisation is
  supported if it, or it without its organisation word, appears in the inputs, or it overlaps the
  hiring company. Tuned on the reference run to keep false positives low; it misses organisations
  named without such a cue ("I have worked with Microsoft", "Initech praised my work"). Recall on
  invented facts injected into real letters, and the flag rate on the letters untouched:
  bench/grounding_injection.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from covertune.core.records import INPUT_FIELDS
from covertune.metrics.summary import is_nan

GROUNDING_COLUMNS: tuple[str, ...] = (
    "name_mentioned", "company_mentioned", "job_title_mentioned",
    "skills_total", "skills_mentioned", "skills_coverage", "skills_missing_list",
    "numbers_claimed", "numbers_claimed_list", "unsupported_numbers", "unsupported_numbers_list",
    "unsupported_orgs", "unsupported_orgs_list",
)
LIST_SEP = "; "
NAN = float("nan")

# ------------------------------------------------------------------ phrase matching


def _norm(text: str) -> str:
    text = text.replace("’", "'").replace("&", " and ")
    text = re.sub(r"\bsr\.?(?=\s)", "senior", text, flags=re.I)
    text = re.sub(r"\bjr\.?(?=\s)", "junior", text, flags=re.I)
    return re.sub(r"\s+", " ", text).strip()


def _phrase_re(phrase: str, case: bool = False) -> re.Pattern | None:
    words = [w for w in re.split(r"[\s\-]+", phrase.strip()) if w]
    if not words:
        return None
    body = r"[\s\-]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![\w]){body}(?![\w+#])", 0 if case else re.I)


def contains_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive (case-sensitive for phrases of 1-2 characters, like "R")."""
    phrase = _norm(phrase)
    pat = _phrase_re(phrase, case=len(phrase) <= 2)
    if pat is None:
        return False
    text = _norm(text)
    if pat.search(text):
        return True
    if " " not in phrase and "-" not in phrase:  # "problemsolving" vs "problem-solving"
        return bool(pat.search(re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", "", text)))
    return False


def _flag(ok: bool) -> float:
    return 1.0 if ok else 0.0


def name_mentioned(letter: str, name: str) -> float:
    words = _norm(name).split()
    if not words:
        return NAN
    if contains_phrase(letter, " ".join(words)):
        return 1.0
    return _flag(all(contains_phrase(letter, w) for w in {words[0], words[-1]}))


LEGAL_SUFFIX = re.compile(r"[\s,]+(inc|corp|corporation|company|co|llc|l\.l\.c|ltd|limited|plc|gmbh)\.?$", re.I)


def company_mentioned(letter: str, company: str) -> float:
    company = _norm(company).strip(" .,")
    if not company:
        return NAN
    core = LEGAL_SUFFIX.sub("", company).strip(" .,")
    return _flag(contains_phrase(letter, company) or (len(core) >= 2 and contains_phrase(letter, core)))


def job_title_mentioned(letter: str, title: str) -> float:
    title = _norm(title).strip(" .,")
    if not title:
        return NAN
    bare = re.sub(r"\s*\([^)]*\)", "", title).strip()
    return _flag(contains_phrase(letter, title) or (bool(bare) and contains_phrase(letter, bare)))


# ------------------------------------------------------------------ skills


@dataclass(frozen=True)
class Skill:
    label: str  # as listed (cleaned)
    alternatives: tuple[str, ...]  # any of these in the letter counts


_LEAD_IN = re.compile(
    r"^(?:and|or|also)\s+|^(?:(?:very|highly)\s+)?(?:strong|excellent|good|solid|advanced|basic|deep|proven|"
    r"extensive|working|hands-?on|some)\s+|^(?:knowledge|experience|expertise|proficiency|skills?|background|"
    r"understanding|familiarity)\s+(?:of|in|with)\s+|^(?:proficient|skilled|experienced|fluent|familiar)\s+"
    r"(?:in|with)\s+", re.I)
_SPLIT = re.compile(r"[,;\n•]|\s+(?:and|&|such as|including|e\.g\.)\s+|\s*\be\.g\.,?\s*", re.I)


def _split_top(text: str) -> list[str]:
    """Split on skill separators outside parentheses."""
    out, depth, buf = [], 0, ""
    i = 0
    while i < len(text):
        ch = text[i]
        depth += ch in "([" and 1 or 0
        depth -= ch in ")]" and depth > 0 and 1 or 0
        if depth == 0:
            m = _SPLIT.match(text, i)
            if m and m.end() > i:
                out.append(buf)
                buf = ""
                i = m.end()
                continue
        buf += ch
        i += 1
    out.append(buf)
    return out


def _clean_skill(text: str) -> str:
    text = re.sub(r"^[^:()]{0,40}:\s*", "", text.strip())  # "Hard Skills: Python" -> "Python"
    text = text.strip(" \t-*•.")
    prev = None
    while prev != text:
        prev, text = text, _LEAD_IN.sub("", text).strip()
    return text


def split_skills(skillsets: str) -> list[Skill]:
    skills, seen = [], set()
    for part in _split_top(skillsets):
        inner = re.findall(r"\(([^)]*)\)", part)
        main = _clean_skill(re.sub(r"\([^)]*\)?", " ", part))
        alts = [main] if main else []
        for group in inner:
            alts += [a for a in (_clean_skill(x) for x in _split_top(group)) if a]
        for a in list(alts):  # "communication skills" -> also "communication"
            bare = re.sub(r"\s+skills?$", "", a, flags=re.I)
            if bare != a and bare:
                alts.append(bare)
        if not alts:
            continue
        label = main or alts[0]
        key = label.lower()
        if key in seen:
            continue
        seen.add(key)
        skills.append(Skill(label, tuple(dict.fromkeys(alts))))
    return skills


def skill_coverage(letter: str, skillsets: str) -> tuple[int, int, list[str]]:
    """(skills listed, skills mentioned, labels of the skills not mentioned)."""
    skills = split_skills(skillsets)
    missing = [s.label for s in skills if not any(contains_phrase(letter, a) for a in s.alternatives)]
    return len(skills), len(skills) - len(missing), missing


# ------------------------------------------------------------------ numbers


@dataclass(frozen=True)
class Number:
    value: float
    text: str  # as written
    kind: str  # "count", "percent", "money", "year"


_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
          r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_IGNORE = re.compile(
    rf"\[[^\]\n]*\]"  # [placeholders]
    rf"|\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b"  # June 5, 2023
    rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\s*,?\s+\d{{4}}\b"  # 5 June 2023
    rf"|\b{_MONTH}\s+\d{{4}}\b"  # May 2021
    rf"|\b\d{{1,2}}[/.-]\d{{1,2}}[/.-]\d{{2,4}}\b|\b\d{{4}}-\d{{2}}-\d{{2}}\b"  # numeric dates
    rf"|(?:\+\d{{1,3}}[\s.-]?)?\(?\b\d{{3}}\)?[\s.-]\d{{3}}[\s.-]\d{{4}}\b"  # phone numbers
    rf"|\b24/7\b"
    rf"|^[ \t]*\(?\d{{1,2}}[.)](?=\s)|\(\d{{1,2}}\)"  # list markers
    rf"|\b(?:question|step|part|section|chapter|phase|round|item|no\.)\s?\d{{1,2}}\b"
    rf"|\b\d{{1,3}}[\s-]?bits?\b",  # 32-bit, 64 bit: a specification, not a claim
    re.I | re.M)
_DIGITS = re.compile(r"(?<![\w.,$])(\$\s?)?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w]|\.\d|,\d{3})(\s?%|\+)?")
# digits glued to a multiplier: 19k users, $5M, 2.5B, 10x faster
_SCALED = re.compile(r"(?<![\w.,$])(\$\s?)?(\d+)(\.\d+)?(k|MM|M|B|x)(?![\w])")  # M, MM, B after "$" only
_SCALE = {"k": 1e3, "M": 1e6, "MM": 1e6, "B": 1e9, "x": 1.0}
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_WORDS.update({w: 10 * i for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_SPELLED = re.compile(r"\b(" + "|".join(sorted(_WORDS, key=len, reverse=True)) + r")(?:[\s-](" +
                      "|".join(w for w in _WORDS if 1 <= _WORDS[w] <= 9) + r"))?\b", re.I)
# what a spelled-out number must count to be a claim ("five years", "eleven new hires"); up to two
# lower-case words may stand between ("seventeen research papers", "thirteen junior developers")
UNITS = ("years? months? weeks? days? hours? percent people persons engineers developers analysts designers "
         "scientists members employees staff hires interns students trainees users customers clients patients "
         "projects products applications apps websites papers publications articles books patents countries "
         "states cities languages teams departments stores locations offices branches sites companies startups "
         "accounts courses certifications certificates awards reports tickets events campaigns deals partners "
         "vendors servers hospitals schools universities million thousand billion hundred dozen").split()
_UNIT = re.compile(r"\s*(?:\+|plus)?[\s-]*(?:(?!of\b|and\b|or\b|the\b|to\b|in\b)[a-z]+[\s-]+){0,2}?(?:"
                   + "|".join(UNITS) + r")\b", re.I)
# "a decade", "two decades", "a dozen": a count without digits or a number word before a unit
_IDIOM = re.compile(r"\b(a|one|two|three|four|five|half\s+a)\s+(decades?|dozen)\b", re.I)
_IDIOM_COUNT = {"a": 1.0, "one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "five": 5.0}


def extract_numbers(text: str, spelled_need_unit: bool = True) -> list[Number]:
    """The numbers a text states (see the module docstring for what is ignored)."""
    clean = _IGNORE.sub(lambda m: " " * len(m.group()), text)
    found: list[tuple[int, Number]] = []
    for m in _DIGITS.finditer(clean):
        money, whole, frac, suffix = m.groups()
        value = float(whole.replace(",", "") + (frac or ""))
        suffix = (suffix or "").strip()
        kind = ("percent" if suffix == "%" else "money" if money else
                "year" if not frac and not suffix and 1900 <= value <= 2099 else "count")
        found.append((m.start(), Number(value, m.group().strip(), kind)))
    for m in _SCALED.finditer(clean):
        money, whole, frac, scale = m.groups()
        if scale in ("M", "MM", "B") and not money:
            continue
        value = float(whole + (frac or "")) * _SCALE[scale]
        found.append((m.start(), Number(value, m.group().strip(), "money" if money else "count")))
    for m in _SPELLED.finditer(clean):
        value = _WORDS[m.group(1).lower()] + (_WORDS[m.group(2).lower()] if m.group(2) else 0)
        unit = _UNIT.match(clean, m.end())
        if spelled_need_unit and (value < 2 or not unit):
            continue
        kind = "percent" if unit and "percent" in unit.group().lower() else "count"
        found.append((m.start(), Number(float(value), m.group(), kind)))
    for m in _IDIOM.finditer(clean):
        count = 0.5 if m.group(1).lower().startswith("half") else _IDIOM_COUNT[m.group(1).lower()]
        value = count * (10 if m.group(2).lower().startswith("decade") else 12)
        if any(start <= m.start() < start + len(n.text) for start, n in found):
            continue  # "two decades": "two" is not read again
        found.append((m.start(), Number(value, m.group(), "count")))
    found = [(start, n) for start, n in found
             if not any(s2 < start < s2 + len(n2.text) or (s2 == start and len(n2.text) > len(n.text))
                        for s2, n2 in found)]
    return [n for _, n in sorted(found, key=lambda x: x[0])]


RESUME_FIELDS = ("current_experience", "past_experience", "skillsets", "qualifications")


def _is_subset_sum(target: float, values: list[float], limit: int = 200_000) -> bool:
    """Whether some subset of ``values`` (each used at most once) sums to ``target`` (to 0.01)."""
    goal = round(target * 100)
    items = [round(v * 100) for v in values if 0 < v <= target]
    sums = {0}
    for v in items:
        sums |= {s + v for s in sums if s + v <= goal}
        if goal in sums:
            return True
        if len(sums) > limit:  # too many combinations to tell: give the letter the benefit of the doubt
            return True
    return goal in sums and goal != 0 and bool(items)


def number_claims(letter: str, inputs: dict[str, str]) -> tuple[list[Number], list[Number]]:
    """(numbers the letter states, those the inputs do not support)."""
    claimed = extract_numbers(letter)
    if not claimed:
        return [], []
    in_all = {round(n.value, 6) for f in INPUT_FIELDS for n in extract_numbers(inputs.get(f, ""), False)}
    summands = [n.value for f in RESUME_FIELDS for n in extract_numbers(inputs.get(f, ""), False)
                if n.kind == "count"]
    unsupported = []
    for n in claimed:
        if round(n.value, 6) in in_all:
            continue
        if n.kind != "year" and len(summands) >= 2 and _is_subset_sum(n.value, summands):
            continue
        unsupported.append(n)
    return claimed, unsupported


# ------------------------------------------------------------------ organisations

ORG_WORDS = {
    "Inc", "Inc.", "Corp", "Corp.", "Corporation", "Company", "Co.", "LLC", "LLP", "Ltd", "Ltd.", "Limited",
    "PLC", "GmbH", "Bank", "University", "College", "Institute", "Laboratories", "Labs", "Foundation",
    "Hospital", "Technologies", "Solutions", "Consulting", "Consultants", "Associates", "Enterprises",
    "Holdings", "Industries", "Partners", "Group", "Ventures", "Capital", "Agency", "Studios",
    "Pharmaceuticals", "Incorporated",
}
_WORD = r"[A-Z](?:[\w&'’-]|\.(?=\w))*"  # a capitalised word; a final period ends the run
_RUN = re.compile(rf"(?<![\w.])(?:\d+[A-Za-z]*[ \t]+)?{_WORD}(?:(?:\s+(?:of|&|for|the|de)\s+|[ \t]+)(?!I\b){_WORD})*")
_LIST_GAP = re.compile(r"^(?:[ \t]*,)?[ \t]*(?:and|or|&)?[ \t]*$")  # "at Google, Amazon and Meta"
_CUE = re.compile(
    r"(?:\b(?:at|At|joined|joining|join)"
    r"|\b(?:worked|work|working|employed|hired|recruited|contracted|consultant|consulting|contractor|volunteered|"
    r"volunteering)\s+(?:for|by|to)"
    r"|\b(?:internships?|interned|interning|partnered|partnering|employed|tenure|stint|career|years|months)\s+with"
    r"|\b(?:intern|internships?|interned|interning)\s+at)\s+$")
_LEADING = {"At", "In", "The", "As", "With", "For", "From", "My", "Our", "Your", "Their", "During", "While",
            "Since", "When", "And", "But", "Dear", "I", "This", "That", "Thank", "Sincerely", "Joining",
            "Additionally", "Furthermore", "Moreover", "Currently", "Previously", "Recently", "After"}
_NOT_ORG = {"Level", "Scale", "Present", "Least", "Home", "Work", "Night", "First", "Heart", "Large", "Times",
            "Hand", "Once", "Best", "Most", "Length"}
_MONTHS = {"January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}


def _tidy_org(run: str) -> str:
    words = run.split()
    while words and words[0] in _LEADING:
        words.pop(0)
    text = " ".join(words)
    text = re.sub(r"['’]s?$", "", text).rstrip(".,'’")
    return re.sub(r"\s+(?:of|and|&|for|the|de)$", "", text)


def find_orgs(letter: str) -> list[str]:
    """Organisation names in a text (heuristic; see the module docstring), in order, without repeats."""
    text = re.sub(r"\[[^\]\n]*\]", lambda m: " " * len(m.group()), letter)
    orgs: list[str] = []
    cued_end = -1  # end of the last organisation found after a cue: a list right after it is cued too
    for m in _RUN.finditer(text):
        raw = m.group()
        words = [w[:-2] if w.endswith(("'s", "’s")) else w for w in raw.split()]
        cued = bool(_CUE.search(text[max(0, m.start() - 24):m.start()])) or (
            cued_end >= 0 and bool(_LIST_GAP.match(text[cued_end:m.start()])))
        cued_end = -1
        has_word = any(w in ORG_WORDS for w in words[1:]) or (
            words[0] in ("University", "Bank", "Institute", "College") and len(words) > 2)
        if not (has_word or cued):
            continue
        org = _tidy_org(raw)
        if (not org or len(org) < 2 or org.isdigit() or org in _MONTHS or _NOT_ORG & set(org.split())
                or (not cued and len(org.split()) < 2)):
            continue
        if cued:
            cued_end = m.end()
        if org not in orgs:
            orgs.append(org)
    return orgs


def _org_key(text: str) -> str:
    text = re.sub(r"[^\w&+ ]", " ", _norm(text).lower())
    return re.sub(r"\s+", " ", re.sub(r"^the\s+", "", text.strip()))


def unsupported_orgs(letter: str, inputs: dict[str, str]) -> list[str]:
    inputs_text = " \n ".join(inputs.get(f, "") for f in INPUT_FIELDS)
    company = _org_key(inputs.get("hiring_company", ""))
    out = []
    for org in find_orgs(letter):
        key = _org_key(org)
        core = " ".join(w for w in key.split() if w.capitalize() not in ORG_WORDS and w.upper() not in ORG_WORDS
                        and w not in {"inc", "corp", "co", "ltd", "llc"})
        if contains_phrase(inputs_text, org) or (len(core) >= 2 and contains_phrase(inputs_text, core)):
            continue
        if company and (company in key or key in company or (core and core in company)):
            continue
        out.append(org)
    return out


# ------------------------------------------------------------------ all of it for one letter


def ground_details(letter: str, inputs: dict[str, str]) -> dict:
    """The grounding findings for one letter with their lists as lists: mentions (1.0/0.0, NaN when the
    input field is empty), skill counts and the missing skills, the numbers claimed and those unsupported
    (as written), the unsupported organisations."""
    total, mentioned, missing = skill_coverage(letter, inputs.get("skillsets", ""))
    claimed, unsupported = number_claims(letter, inputs)
    return {
        "name_mentioned": name_mentioned(letter, inputs.get("applicant_name", "")),
        "company_mentioned": company_mentioned(letter, inputs.get("hiring_company", "")),
        "job_title_mentioned": job_title_mentioned(letter, inputs.get("job_title", "")),
        "skills_total": total,
        "skills_mentioned": mentioned,
        "skills_coverage": mentioned / total if total else NAN,
        "skills_missing": missing,
        "numbers_claimed": [n.text for n in claimed],
        "unsupported_numbers": [n.text for n in unsupported],
        "unsupported_orgs": unsupported_orgs(letter, inputs),
    }


def ground(letter: str, inputs: dict[str, str] | None) -> dict:
    """The grounding columns for one letter; NaN/empty when the inputs are unknown."""
    if inputs is None:
        return {c: ("" if c.endswith("_list") else NAN) for c in GROUNDING_COLUMNS}
    d = ground_details(letter, inputs)
    return {
        "name_mentioned": d["name_mentioned"],
        "company_mentioned": d["company_mentioned"],
        "job_title_mentioned": d["job_title_mentioned"],
        "skills_total": d["skills_total"],
        "skills_mentioned": d["skills_mentioned"],
        "skills_coverage": d["skills_coverage"],
        "skills_missing_list": LIST_SEP.join(d["skills_missing"]),
        "numbers_claimed": len(d["numbers_claimed"]),
        "numbers_claimed_list": LIST_SEP.join(d["numbers_claimed"]),
        "unsupported_numbers": len(d["unsupported_numbers"]),
        "unsupported_numbers_list": LIST_SEP.join(d["unsupported_numbers"]),
        "unsupported_orgs": len(d["unsupported_orgs"]),
        "unsupported_orgs_list": LIST_SEP.join(d["unsupported_orgs"]),
    }


def ground_json(letter: str, inputs: dict[str, str]) -> dict:
    """``ground_details`` as JSON: mentions true/false (null when the input field is empty), the skill
    coverage a float (null without skills), lists of strings."""
    d = ground_details(letter, inputs)
    for k in ("name_mentioned", "company_mentioned", "job_title_mentioned"):
        d[k] = None if is_nan(d[k]) else bool(d[k])
    if is_nan(d["skills_coverage"]):
        d["skills_coverage"] = None
    return d
