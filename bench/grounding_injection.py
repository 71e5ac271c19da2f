#!/usr/bin/env python
"""How well does the grounding check catch invented facts? Recall on fake facts injected into real
letters, and the flag rate on the same letters untouched.

Every ground-truth letter of the dataset's train and test files gets two injected sentences, one at a
time, each at a sentence boundary chosen from the row index: a number the inputs do not support ("I
have 8 years of experience", "Over the past eleven years ...", "a decade", "by 23%", "12k users", ...)
and an organisation the inputs do not name ("During my time at Acme Corporation, ...", "I completed
an internship with Initech ..."), in several phrasings, cycled over the rows. Values are chosen so that
no number in the inputs, nor a sum of them, equals them; organisations so that the inputs and the
letter do not contain them. An injection counts as caught when the injected letter has an unsupported
number (organisation) that the original letter has not, and it is written inside the injected sentence.

Controls: the same phrasings holding a fact the inputs do give (a number of years from the resume, the
hiring company) must not be flagged; the untouched letters' flag rate is an upper bound on the
false-positive rate (some ground-truth letters do state numbers or employers their inputs lack; the
flagged items are listed so they can be read).

    python bench/grounding_injection.py --data ../shared/data/cover-letter-dataset --label after \\
        --json docs/results/bench/grounding_injection.json

The JSON holds one entry per ``--label`` (a later call adds its label beside the others).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# ---------------------------------------------------------------- the injector (independent of the detector)

NUMBER_TEMPLATES: tuple[tuple[str, str], ...] = (  # (sentence, how the value is written)
    ("I have {} years of experience in this field.", "digits"),
    ("With {} years of experience, I am ready to contribute from day one.", "words"),
    ("I bring {}+ years of hands-on experience to this role.", "digits"),
    ("Over the past {} years, I have refined these skills.", "words"),
    ("I have {} years' experience leading projects like these.", "words"),
    ("I led a team of {} engineers through two product launches.", "digits"),
    ("I increased customer satisfaction by {}%.", "digits"),
    ("I cut processing time by {} percent.", "words"),
    ("I trained {} new hires on our internal tools.", "words"),
    ("I mentored {} junior developers.", "words"),
    ("My dashboards served {}k users every month.", "digits"),
    ("I managed a budget of ${} million.", "digits"),
    ("I have more than {} of professional experience.", "decade"),
    ("I handled {} support tickets a week.", "digits"),
    ("I have published {} research papers.", "words"),
    ("I have over {} years in the industry.", "words"),
)
ORG_TEMPLATES: tuple[str, ...] = (
    "During my time at {}, I sharpened these skills.",
    "I previously worked for {}, where I delivered key projects.",
    "I completed an internship with {} last year.",
    "{} recognised my work with an internal award.",
    "I partnered with {} on several client engagements.",
    "I was hired by {} to lead a key initiative.",
    "My years at {} taught me to work under pressure.",
    "I also served as a consultant to {}.",
    "Before that, I spent three years with {} as an analyst.",
    "I was employed by {} for most of my career.",
)
ORGS: tuple[str, ...] = (
    "Acme Corporation", "Initech", "Globex Inc.", "Hooli", "Vandelay Industries", "Northwind Traders",
    "Umbrella Labs", "Contoso", "Stark Industries", "Pied Piper", "Cyberdyne Systems", "Massive Dynamic",
    "Wayne Enterprises", "Oscorp", "Tyrell Corporation", "Soylent Foods", "Dunder Mifflin", "Gringotts Bank",
)
WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen twenty").split()
TENS = {30: "thirty", 40: "forty", 50: "fifty"}
CANDIDATES = (8, 11, 7, 13, 9, 14, 12, 17, 6, 15, 19, 16, 23, 37, 45)
DECADES = ((10, "a decade"), (20, "two decades"))
COMPANY_SUFFIX = re.compile(r"[\s,]+(inc|corp|corporation|company|co|llc|ltd|limited|plc|gmbh)\.?$", re.I)


def spelled(n: int) -> str:
    if n <= 20:
        return WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS.get(tens * 10, "twenty") + (f"-{WORDS[ones]}" if ones else "")


def input_values(inputs: dict[str, str]) -> set[float]:
    """Every number written in the inputs (digits, and number words), with the sums of any of them:
    an injected value outside this set is supported by nothing the inputs say."""
    text = " ".join(inputs.values()).lower()
    values = [float(v.replace(",", "")) for v in re.findall(r"\d[\d,]*(?:\.\d+)?", text) if v.strip(",")]
    values += [float(i) for i, w in enumerate(WORDS) if re.search(rf"\b{w}\b", text)]
    values += [float(k) for k, w in TENS.items() if re.search(rf"\b{w}\b", text)]
    values += [10.0 for _ in re.findall(r"\bdecade", text)]
    sums = {0.0}
    for v in values[:40]:
        sums |= {s + v for s in sums if s + v <= 100}
    return sums | set(values)


def boundaries(letter: str) -> list[int]:
    """Offsets where a sentence starts: after ". " (or ! ?) before a capital, or at a paragraph start."""
    cuts = [m.end() for m in re.finditer(r"(?<=[.!?])[ \t]+(?=[A-Z])", letter)]
    cuts += [m.end() for m in re.finditer(r"\n\s*\n(?=[A-Z])", letter)]
    return sorted(set(cuts))


def insert(letter: str, sentence: str, row: int) -> str:
    cuts = boundaries(letter)
    if not cuts:
        return sentence + " " + letter
    at = cuts[(row * 3 + 1) % len(cuts)]
    return letter[:at] + sentence + " " + letter[at:]


def number_sentence(row: int, inputs: dict[str, str]) -> tuple[str, str]:
    """(template id, sentence) with an unsupported number, or ("", "") when every candidate is supported."""
    t = row % len(NUMBER_TEMPLATES)
    template, form = NUMBER_TEMPLATES[t]
    taken = input_values(inputs)
    if form == "decade":
        free = [w for v, w in DECADES if float(v) not in taken]
        return (f"n{t}", template.format(free[0])) if free else ("", "")
    start = row % len(CANDIDATES)
    for v in CANDIDATES[start:] + CANDIDATES[:start]:
        if float(v) not in taken:
            return f"n{t}", template.format(spelled(v) if form == "words" else str(v))
    return "", ""


def org_sentence(row: int, inputs: dict[str, str], letter: str) -> tuple[str, str]:
    t = row % len(ORG_TEMPLATES)
    text = (" ".join(inputs.values()) + " " + letter).lower()
    start = (row * 7) % len(ORGS)
    for org in ORGS[start:] + ORGS[:start]:
        core = COMPANY_SUFFIX.sub("", org).lower()
        if core not in text:
            return f"o{t}", ORG_TEMPLATES[t].format(org)
    return "", ""


def control_sentences(inputs: dict[str, str]) -> list[tuple[str, str, str]]:
    """(kind, template id, sentence) holding facts the inputs give: a number of years from the resume,
    the hiring company."""
    out = []
    resume = " ".join(inputs[f] for f in ("current_experience", "past_experience", "qualifications"))
    m = re.search(r"(?<![\d.])\b(\d{1,2})\+?\s*years?\b", resume, re.I)
    if m:
        out.append(("numbers", "n0", NUMBER_TEMPLATES[0][0].format(m.group(1))))
        out.append(("numbers", "n15", f"I have over {m.group(1)} years in the industry."))
    company = inputs.get("hiring_company", "").strip()
    if company and company.lower() != "none":
        out.append(("orgs", "o0", f"I am eager to bring my skills to {company}."))
        out.append(("orgs", "o4", f"I would be glad to work at {company}."))
    return out


# ---------------------------------------------------------------- measuring the detector


def load_rows(data: Path) -> list[tuple[str, dict[str, str], str]]:
    import pandas as pd

    from covertune.core.records import from_source_row, inputs_of

    rows = []
    for split in ("train", "test"):
        frame = pd.read_csv(data / f"{split}.csv", dtype=str, keep_default_na=False)
        for i, row in enumerate(frame.to_dict("records")):
            record = from_source_row(row)
            if record["cover_letter"].strip():
                rows.append((f"{split}-{i}", inputs_of(record), record["cover_letter"]))
    return rows


def new_items(before: list[str], after: list[str]) -> list[str]:
    return list((Counter(after) - Counter(before)).elements())


def measure(rows) -> dict:
    from covertune.metrics.grounding import ground_details

    flagged = {"numbers": [], "orgs": []}
    caught = {"numbers": Counter(), "orgs": Counter()}
    tried = {"numbers": Counter(), "orgs": Counter()}
    missed = {"numbers": [], "orgs": []}
    controls = Counter()
    control_flags = Counter()
    control_examples = []
    for row, (rid, inputs, letter) in enumerate(rows):
        base = ground_details(letter, inputs)
        base_items = {"numbers": base["unsupported_numbers"], "orgs": base["unsupported_orgs"]}
        for kind in flagged:
            if base_items[kind]:
                flagged[kind].append({"id": rid, "items": base_items[kind]})
        for kind, (tid, sentence) in (("numbers", number_sentence(row, inputs)),
                                       ("orgs", org_sentence(row, inputs, letter))):
            if not sentence:
                continue
            d = ground_details(insert(letter, sentence, row), inputs)
            items = new_items(base_items[kind], d["unsupported_" + kind])
            hit = any(item.lower() in sentence.lower() for item in items)
            tried[kind][tid] += 1
            caught[kind][tid] += hit
            if not hit:
                missed[kind].append(sentence)
        for kind, tid, sentence in control_sentences(inputs):
            d = ground_details(insert(letter, sentence, row), inputs)
            items = new_items(base_items[kind], d["unsupported_" + kind])
            controls[kind] += 1
            if items:
                control_flags[kind] += 1
                control_examples.append({"id": rid, "sentence": sentence, "flagged": items})
    n = len(rows)
    out = {"letters": n}
    for kind in ("numbers", "orgs"):
        total, hits = sum(tried[kind].values()), sum(caught[kind].values())
        out[kind] = {
            "injected": total, "caught": hits, "recall": round(hits / total, 4),
            "recall_by_phrasing": {tid: round(caught[kind][tid] / tried[kind][tid], 3)
                                   for tid in sorted(tried[kind], key=lambda s: int(s[1:]))},
            "missed_examples": sorted(Counter(missed[kind]).items(), key=lambda x: -x[1])[:12],
            "untouched_letters_flagged": len(flagged[kind]),
            "untouched_flag_rate": round(len(flagged[kind]) / n, 4),
            "controls": controls[kind], "controls_flagged": control_flags[kind],
            "control_flag_rate": round(control_flags[kind] / controls[kind], 4) if controls[kind] else None,
        }
    either = {f["id"] for f in itertools.chain(*flagged.values())}
    out["untouched_flag_rate_either"] = round(len(either) / n, 4)
    out["untouched_flagged"] = flagged
    out["control_examples"] = control_examples[:20]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(os.environ.get("COVERTUNE_SHARED", REPO.parent / "shared")) / "data" / "cover-letter-dataset"),
                   help="folder holding the dataset's train.csv and test.csv")
    p.add_argument("--label", default="current", help="name of this measurement in the JSON")
    p.add_argument("--json", default="", help="JSON file to add the measurement to")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "train.csv").is_file() or not (data / "test.csv").is_file():
        print(f"--data {data}: train.csv and test.csv not found there", file=sys.stderr)
        return 2
    result = measure(load_rows(data))
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "", False
    result["detector_commit"] = commit + ("+changes" if dirty else "")
    for kind in ("numbers", "orgs"):
        r = result[kind]
        print(f"{args.label}: {kind}: recall {r['recall']:.3f} ({r['caught']}/{r['injected']}), untouched letters "
              f"flagged {r['untouched_flag_rate']:.3f} ({r['untouched_letters_flagged']}/{result['letters']}), "
              f"controls flagged {r['controls_flagged']}/{r['controls']}")
    if args.json:
        from covertune.core import io

        path = Path(args.json)
        doc = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        doc.setdefault("command", "python bench/grounding_injection.py --data ../shared/data/cover-letter-dataset "
                       "--label LABEL --json docs/results/bench/grounding_injection.json")
        doc.setdefault("runs", {})[args.label] = result
        io.write_json(path, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
