"""covertune compare: the reference run's evaluated folder beside a run scored here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from covertune.cli import main
from covertune.stages.compare import compare
from covertune.config.stages import CompareConfig
from covertune.config.build import build
from covertune.stages.evaluate import evaluate
from covertune.metrics.summary import METRICS

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "results" / "reference"  # the reference run, evaluated with the embedded scorer


@pytest.fixture(scope="module")
def small_run(reference_dir, tmp_path_factory) -> Path:
    """The reference's first 6 letters, scored here without BERTScore."""
    out = tmp_path_factory.mktemp("small")
    frame = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).head(6)
    frame.to_csv(out / "eval.csv", index=False)
    evaluate(build("evaluate", {"out": str(out), "bertscore_model": "none"}))
    return out


def test_two_runs_side_by_side(small_run, tmp_path):
    message = compare(CompareConfig(runs=[str(REFERENCE), str(small_run)], labels=["7B reference", "<b>six</b>"],
                                    out=str(tmp_path)))
    table = pd.read_csv(tmp_path / "compare.csv")
    rouge = table[(table["subset"] == "full") & (table["metric"] == "rougeL_f")].iloc[0]
    assert rouge["7B reference base"] == pytest.approx(0.3144, abs=5e-5)  # the reference's published figures
    assert rouge["7B reference fine-tuned"] == pytest.approx(0.5189, abs=5e-5)
    small = json.loads((small_run / "metrics.json").read_text())["subsets"]["full"]["models"]
    assert rouge["<b>six</b> fine-tuned"] == pytest.approx(small["fine_tuned"]["rougeL_f"]["mean"])
    n = table[(table["subset"] == "full") & (table["metric"] == "n")].iloc[0]
    assert n["7B reference base"] == 349 and n["<b>six</b> base"] == 6
    assert {"full", "fair", "strict"} <= set(table["subset"])
    assert {"skills_coverage", "unsupported_numbers", "length_chars", "length_chars_median"} <= set(table["metric"])
    bert = table[(table["subset"] == "full") & (table["metric"] == "bert_f1")].iloc[0]
    assert bert["7B reference fine-tuned"] > 0 and pd.isna(bert["<b>six</b> fine-tuned"])  # not scored there
    md = (tmp_path / "compare.md").read_text()
    assert "| ROUGE-L F1 ↑ | 0.3144 | **0.5189** |" in md and "7B reference fine-tuned (n=349)" in message
    # a row per registry metric the runs have, its cells as the registry formats them
    summary = pd.read_csv(REFERENCE / "eval_summary.csv")
    full_md = md.split("## full")[1].split("## fair")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in full_md.splitlines()
            if line.startswith("| ") and not line.startswith("| metric")}
    for key, metric in METRICS.items():
        if key not in set(summary.metric):
            continue
        value = summary[(summary.subset == "full") & (summary.model == "base") & (summary.metric == key)]["mean"]
        label = next(k for k in rows if k.rstrip(" ↑↓") == metric.label)
        assert rows[label][0].strip("* |") == metric.format(value.iloc[0]), key
    page = (tmp_path / "compare.html").read_text()
    assert "<b>six</b>" not in page and "&lt;b&gt;six&lt;/b&gt;" in page  # escaped
    assert "<script" not in page and "http" not in page.split("</style>", 1)[1]  # self-contained


def test_runs_scored_by_different_scorers_are_refused(small_run, tmp_path):
    # the reference run as if scored by another BERTScore model (roberta-large, layer 17)
    other = tmp_path / "other"
    shutil.copytree(REFERENCE, other)
    for name in ("metrics.json", "eval_summary.csv"):
        text = (other / name).read_text()
        (other / name).write_text(text.replace("sentence-transformers/all-MiniLM-L6-v2_L6", "roberta-large_L17"))
    runs = [str(REFERENCE), str(other), str(small_run)]  # small_run skipped BERTScore: no conflict of its own
    with pytest.raises(ValueError, match="different scorers.*--allow-mixed-scorers"):
        compare(CompareConfig(runs=runs, out=str(tmp_path / "c")))
    code = main(["compare", *runs, "--out", str(tmp_path / "c")])
    assert code == 2 and not (tmp_path / "c" / "compare.md").exists()
    assert main(["compare", *runs, "--out", str(tmp_path / "c"), "--allow-mixed-scorers"]) == 0
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "BERTScore F1 ↑ (scorers differ)" in md and "not comparable" in md


def test_bad_inputs_are_named(small_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"eval_summary.csv not found: run `covertune evaluate"):
        compare(CompareConfig(runs=[str(small_run), str(tmp_path)], out=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="1 label\\(s\\) for 2 run"):
        compare(CompareConfig(runs=[str(small_run), str(REFERENCE)], labels=["x"], out=str(tmp_path / "c")))
    with pytest.raises(ValueError, match="unknown subset|subsets: unknown"):
        compare(CompareConfig(runs=[str(small_run)], subsets=["half"], out=str(tmp_path / "c")))


def test_markdown_escapes_titles_and_labels(small_run, tmp_path):
    compare(CompareConfig(runs=[str(REFERENCE), str(small_run)], labels=["a|b", "<script>x()</script>"],
                          title="<script>alert(1)</script> runs", out=str(tmp_path)))
    md = (tmp_path / "compare.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt; runs" in md
    header = next(line for line in md.splitlines() if line.startswith("| metric"))
    cells = [c for c in header.replace("\\|", "").split("|")[1:-1]]
    assert len(cells) == 1 + 4  # the metric column and 2 runs x 2 models: the label's | does not split a cell
    assert "a\\|b base" in header


def test_pages_record_no_absolute_paths(small_run, tmp_path):
    out = tmp_path / "cmp"
    compare(CompareConfig(runs=[str(REFERENCE), str(small_run)], out=str(out)))
    for name in ("compare.md", "compare.html"):
        text = (out / name).read_text()
        assert str(small_run) not in text and str(REPO) not in text and "/work/shared" not in text, name
        assert "eval.csv" in text
