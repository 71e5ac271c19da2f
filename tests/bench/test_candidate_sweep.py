"""bench/candidate_sweep.py with --classifier: classifier-mbr re-made from a candidates file, each candidate
scored by the letter-quality classifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from covertune.core import io
from covertune.classify.model import LetterClassifier, examine_all
from covertune.core.records import inputs_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import candidate_sweep  # noqa: E402

TEMPLATE = ("Dear Hiring Manager, I am applying for the {title} position at {company}. I am a hard-working team player "
            "with a passion for excellence and I am {x} I would be a great fit for your team. Sincerely, {name} "
            "[Your Phone Number]")


def test_classifier_mbr_rows_and_choice(flagged_train_records, tmp_path):
    fit_rows = flagged_train_records[:200]
    checks, labels, _ = examine_all([r["cover_letter"] for r in fit_rows], [inputs_of(r) for r in fit_rows],
                                    [r["flags"] for r in fit_rows])
    path = LetterClassifier.fit([r["cover_letter"] for r in fit_rows], checks, labels).save(tmp_path / "classifier.json")
    # good letters by the rule that name the applicant, never fitted on
    later = flagged_train_records[200:]
    _, later_labels, _ = examine_all([r["cover_letter"] for r in later], [inputs_of(r) for r in later],
                                     [r["flags"] for r in later])
    held = [r for r, y in zip(later, later_labels)
            if y == 1 and r["applicant_name"].strip() and r["applicant_name"].strip() in r["cover_letter"]][:4]
    assert len(held) == 4
    io.write_jsonl(tmp_path / "validation.jsonl", held)
    rows = []
    for i, rec in enumerate(held):
        fill = dict(title=rec["job_title"].strip(), company=rec["hiring_company"].strip(),
                    name=rec["applicant_name"].strip())
        # the greedy letter and two more are one template (the MBR consensus); the real letter is the odd one out
        letters = [TEMPLATE.format(x="sure", **fill), TEMPLATE.format(x="certain", **fill), rec["cover_letter"],
                   TEMPLATE.format(x="confident", **fill)]
        rows.append({"index": i, "candidates": [{"letter": t} for t in letters]})
    io.write_jsonl(tmp_path / "cands.jsonl", rows)
    out = tmp_path / "sweep.json"
    assert candidate_sweep.main(["--data", str(tmp_path / "validation.jsonl"), "--set", f"{tmp_path / 'cands.jsonl'},0.7,0.95",
                                 "--counts", "1", "4", "--workers", "1", "--json", str(out), "--args",
                                 str(tmp_path / "chosen.args"), "--classifier", str(path),
                                 "--classifier-thresholds", "0.5", "0.9"]) == 0
    result = json.loads(out.read_text())
    by = {(r["select"], r["classifier_threshold"]): r for r in result["rows"] if r["candidates"] == 4}
    assert set(by) == {("mbr", None), ("grounded-mbr", None), ("classifier-mbr", 0.5), ("classifier-mbr", 0.9)}
    # grounded-mbr keeps a template (it names the company and the applicant); classifier-mbr takes the real letter
    assert by[("grounded-mbr", None)]["quality"] < 0.5 <= by[("classifier-mbr", 0.5)]["quality"]
    assert by[("classifier-mbr", 0.5)]["not_greedy"] == 4
    assert by[("classifier-mbr", 0.5)]["rouge_l"] == 1.0  # the chosen letters are the validation letters themselves
    # the stated rule picks it (every constraint met, the best ROUGE-L), and says how to generate with it
    assert result["chosen"]["select"] == "classifier-mbr" and result["chosen"]["classifier_threshold"] == 0.5
    assert (tmp_path / "chosen.args").read_text().strip() == (
        f"--candidates 4 --select classifier-mbr --candidate-temperature 0.7 --candidate-top-p 0.95 "
        f"--classifier {path} --classifier-threshold 0.5")


def test_variants_and_repetition_weights_are_swept_and_the_rule_caps_repetition(tmp_path):
    inputs = {"job_title": "Data Analyst", "hiring_company": "Brightwave", "preferred_qualifications": "",
              "applicant_name": "Ann Lee", "current_experience": "Analyst at Foxglove", "past_experience": "",
              "skillsets": "SQL, Python", "qualifications": ""}
    truth = "Dear Brightwave team, I am applying for the Data Analyst role with SQL and Python. Sincerely, Ann Lee"
    io.write_jsonl(tmp_path / "validation.jsonl", [{**inputs, "cover_letter": truth, "id": "v-0"}])
    echo = ("Dear Brightwave team, I am applying for the Data Analyst role with SQL and Python and SQL and Python. "
            "Sincerely, Ann Lee")
    sets = {"a": [echo.replace("role", "post"), echo, truth.replace("Dear", "Hello"), echo.replace("team", "crew")],
            "b": [truth, truth.replace("team", "crew"), truth.replace("role", "job"), echo]}
    for name, letters in sets.items():
        io.write_jsonl(tmp_path / f"{name}.jsonl", [{"index": 0, "candidates": [{"letter": t} for t in letters]}])
    out = tmp_path / "sweep.json"
    assert candidate_sweep.main(["--data", str(tmp_path / "validation.jsonl"), "--workers", "1",
                                 "--set", f"{tmp_path / 'a.jsonl'},0.7,0.95,a", "--set", f"{tmp_path / 'b.jsonl'},1.0,0.9,b",
                                 "--counts", "1", "4", "--selects", "grounded-mbr", "--repetition-weights", "0", "5",
                                 "--max-repetition", "0.1", "--json", str(out), "--args", str(tmp_path / "args")]) == 0
    result = json.loads(out.read_text())
    keys = {(r["variant"], r["candidates"], r["repetition_weight"]) for r in result["rows"]}
    assert keys == {("a", 1, 0.0), ("a", 4, 0.0), ("a", 4, 5.0), ("b", 1, 0.0), ("b", 4, 0.0), ("b", 4, 5.0)}
    by = {(r["variant"], r["candidates"], r["repetition_weight"]): r for r in result["rows"]}
    # variant a: plain MBR takes a repetitive letter, the weight takes the one that repeats least
    assert by[("a", 4, 0.0)]["repetition"] > 0.1 >= by[("a", 4, 5.0)]["repetition"]
    assert result["max_repetition"] == 0.1
    assert all(result["chosen"]["repetition"] <= 0.1 for _ in [0])
    assert result["chosen"]["rouge_l"] == max(r["rouge_l"] for r in result["rows"]
                                              if r["select"] != "greedy" and r["repetition"] <= 0.1)
    args = (tmp_path / "args").read_text()
    assert "--select grounded-mbr" in args
    assert ("--select-repetition-weight 5.0" in args) == (result["chosen"]["repetition_weight"] == 5.0)


def test_a_set_names_its_variant_or_not_and_its_path_may_hold_commas():
    assert candidate_sweep._parse_set("a,b/c.jsonl,0.7,0.95") == ("a,b/c.jsonl", "0.7", "0.95", "")
    assert candidate_sweep._parse_set("a,b/c.jsonl,1.0,0.9,rslora") == ("a,b/c.jsonl", "1.0", "0.9", "rslora")
