"""classify.stage: `covertune classify train|score` on a run directory of real letters, the hand-labelled
slice, the data stage's --filter-classifier, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from covertune.core import io
from covertune.stages.classify import classify, read_hand_labels
from covertune.cli import main
from covertune.config.stages import ClassifyConfig, DataConfig
from covertune.stages.data import run_data
from covertune.core.prompt import render_prompt
from covertune.core.rundir import StaleStage

N_TRAIN = 240


def _hand_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "reason"])
        w.writerows(rows)
    return path


@pytest.fixture
def run(tmp_path, flagged_train_records):
    io.write_jsonl(tmp_path / "data" / "train.jsonl", flagged_train_records[:N_TRAIN])
    io.write_jsonl(tmp_path / "data" / "validation.jsonl", flagged_train_records[N_TRAIN:])
    return tmp_path


def test_train_writes_the_classifier_and_its_report(run, flagged_train_records):
    val = flagged_train_records[N_TRAIN:]
    hand = _hand_csv(run / "hand.csv", [(val[0]["id"], 1, "good"), (val[1]["id"], 0, "bad"), (val[2]["id"], 1, "ok")])
    cfg = ClassifyConfig(out=str(run), hand_labels=str(hand), folds=3)
    assert "wrote" in classify(cfg)
    folder = run / "classifier"
    rep = json.loads((folder / "report.json").read_text())
    assert rep["train"]["rows"] == N_TRAIN and rep["validation"]["rows"] == len(val)
    assert rep["hand_labels"]["rows"] == 3 and rep["hand_labels"]["negative"] == 1
    assert [r["id"] for r in rep["hand_labels"]["rows_scored"]] == [v["id"] for v in val[:3]]
    assert rep["other_features"]["features"] == "text"
    assert "hand-labelled slice" in (folder / "report.md").read_text()
    scores = pd.read_csv(folder / "train_scores.csv")
    assert len(scores) == N_TRAIN and scores["score"].between(0, 1).all()
    assert len(pd.read_csv(folder / "validation_scores.csv")) == len(val)

    assert "skipped" in classify(cfg)
    with pytest.raises(StaleStage, match="regularization_c"):
        classify(ClassifyConfig(out=str(run), hand_labels=str(hand), folds=3, regularization_c=3.0))

    # score: a split, and an eval.csv's letters (inputs parsed from its prompts)
    assert "scores.validation.csv" in classify(ClassifyConfig(action="score", out=str(run)))
    table = pd.read_csv(folder / "scores.validation.csv")
    expected = pd.read_csv(folder / "validation_scores.csv")
    assert table["id"].tolist() == expected["id"].tolist()
    assert table["score"].tolist() == pytest.approx(expected["score"].tolist(), abs=1e-6)
    frame = pd.DataFrame({"prompt": [render_prompt(r) for r in val[:4]],
                          "ground_truth": [r["cover_letter"] for r in val[:4]],
                          "base_output": ["", "Hello.", "", ""], "fine_tuned_output": [r["cover_letter"] for r in val[:4]]})
    frame.to_csv(run / "eval.csv", index=False)
    msg = classify(ClassifyConfig(action="score", out=str(run), eval_csv=str(run / "eval.csv")))
    assert "ground_truth: mean score" in msg and "base_output" in msg
    scored = pd.read_csv(folder / "scores.eval.csv")
    assert len(scored) == 4 + 1 + 4  # empty letters are not scored
    assert scored.loc[scored["column"] == "base_output", "rule_label"].tolist() == [0]  # "Hello." is too short


def test_hand_label_errors(run, flagged_train_records):
    val_id, train_id = flagged_train_records[N_TRAIN]["id"], flagged_train_records[0]["id"]
    cases = [
        ([(val_id, "yes", "x")], "line 2 .*field label is 'yes'"),
        ([(val_id, 1, "x"), (val_id, 0, "y")], "line 3, id .* twice"),
        ([("", 1, "x")], "line 2, field id is empty"),
    ]
    for rows, msg in cases:
        path = _hand_csv(run / "h.csv", rows)
        with pytest.raises(ValueError, match=msg):
            read_hand_labels(path)
    (run / "cols.csv").write_text("id,verdict\nx,1\n")
    with pytest.raises(ValueError, match="missing column.*label"):
        read_hand_labels(run / "cols.csv")
    for rows, msg in (([(train_id, 1, "x")], "in the train split the classifier learns from"),
                      ([("nowhere-1", 1, "x")], "nowhere-1 is in neither")):
        path = _hand_csv(run / "h.csv", rows)
        with pytest.raises(ValueError, match=msg):
            classify(ClassifyConfig(out=str(run), hand_labels=str(path)))
    with pytest.raises(FileNotFoundError, match="hand labels"):
        classify(ClassifyConfig(out=str(run), hand_labels=str(run / "absent.csv")))


def test_the_docs_hand_labels_file_is_valid():
    path = Path(__file__).resolve().parents[2] / "docs" / "letter_quality_hand_labels.csv"
    rows = read_hand_labels(path)
    assert len(rows) >= 50 and {r["label"] for r in rows} == {0, 1} and all(r["reason"] for r in rows)


def test_data_stage_filter_drops_exactly_the_rows_it_reports(tmp_path):
    plain, filtered = tmp_path / "plain", tmp_path / "filtered"
    run_data(DataConfig(data="sample", out=str(plain)))
    run_data(DataConfig(data="sample", out=str(filtered), filter_classifier=0.5))

    report = json.loads((filtered / "data" / "report.json").read_text())
    cf = report["classifier_filter"]
    before = [r["id"] for r in io.read_jsonl(plain / "data" / "train.jsonl")]
    after = [r["id"] for r in io.read_jsonl(filtered / "data" / "train.jsonl")]
    dropped = [d["id"] for d in cf["dropped"]]
    assert dropped and set(before) - set(after) == set(dropped) and set(after) <= set(before)
    assert report["splits"]["train"]["classifier_dropped"] == len(dropped) and cf["kept"] == len(after)
    # the rows dropped are those whose out-of-fold score is below the threshold
    oof = pd.read_csv(filtered / "classifier" / "train_scores.csv")
    assert set(oof.loc[oof["score"] < 0.5, "id"]) == set(dropped)
    assert set(oof["id"]) == set(before)  # fitted on the train rows before filtering
    # validation and test are the same as without the filter
    for split in ("validation", "test"):
        assert io.read_jsonl(plain / "data" / f"{split}.jsonl") == io.read_jsonl(filtered / "data" / f"{split}.jsonl")
    md = (filtered / "data" / "report.md").read_text()
    assert "## Letter-quality classifier filter" in md and f"`{dropped[0]}`" in md
    assert "skipped" in run_data(DataConfig(data="sample", out=str(filtered), filter_classifier=0.5))
    assert "trained by the data stage" in classify(ClassifyConfig(out=str(filtered)))


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["classify", "score", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no letter-quality classifier" in err and "covertune classify train" in err
    assert main(["classify", "train", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "covertune data" in err
    with pytest.raises(SystemExit):
        main(["classify", "fit", "--out", str(tmp_path)])
    assert "invalid choice: 'fit'" in capsys.readouterr().err


def test_score_errors_name_the_file_row_and_field(run):
    classify(ClassifyConfig(out=str(run), folds=2))
    pd.DataFrame({"prompt": ["### Job Description\nnot the schema"], "fine_tuned_output": ["A letter."]}).to_csv(
        run / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: line 2, field prompt: the prompt is not in covertune's prompt schema"):
        classify(ClassifyConfig(action="score", out=str(run), eval_csv=str(run / "bad.csv")))
    pd.DataFrame({"letter": ["x"]}).to_csv(run / "cols.csv", index=False)
    with pytest.raises(ValueError, match="needs a prompt column and a letter column"):
        classify(ClassifyConfig(action="score", out=str(run), eval_csv=str(run / "cols.csv")))
    with pytest.raises(FileNotFoundError, match="eval_csv .*absent.csv does not exist"):
        classify(ClassifyConfig(action="score", out=str(run), eval_csv=str(run / "absent.csv")))
    with pytest.raises(FileNotFoundError, match="test.jsonl not found: run `covertune data"):
        classify(ClassifyConfig(action="score", out=str(run), split="test"))
