"""The data stage end to end: the real data, the packaged sample through the CLI, skip/force, filtering."""

from __future__ import annotations

import csv
import json

import pytest

from covertune.core import io, rundir
from covertune.core.rundir import StaleStage
from covertune.config.stages import DataConfig
from covertune.stages.data import OUTPUTS, run_data
from covertune.core.records import RECORD_FIELDS, SOURCE_COLUMNS


@pytest.fixture(scope="module")
def real_run(dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    message = run_data(DataConfig(data=str(dataset_dir), out=str(out)))
    return out, message


def test_real_data_files_and_counts(real_run, dataset_dir):
    out, message = real_run
    data = out / "data"
    for name in OUTPUTS:
        assert (data / name).stat().st_size > 0, name
    assert rundir.is_done(out, "data")
    train, val, test = (io.read_jsonl(data / f"{s}.jsonl") for s in ("train", "validation", "test"))
    # 813 train rows - 2 exact duplicates - 4 test-overlap rows left after dedupe = 807; 10% validation
    assert (len(train), len(val), len(test)) == (726, 81, 349)
    assert [r["id"] for r in test] == [f"test-{i}" for i in range(349)]
    with open(dataset_dir / "test.csv", newline="", encoding="utf-8") as f:
        source = list(csv.DictReader(f))
    for rec, row in zip(test, source):
        assert all(rec[key] == row[col] for col, key in SOURCE_COLUMNS.items() if key != "cover_letter")
        assert rec["cover_letter_raw"] == row["Cover Letter"]
    ids = {r["id"] for r in train} | {r["id"] for r in val}
    assert not ids & {"train-27", "train-153", "train-158", "train-208", "train-556", "train-695"}
    assert len(ids) == 807
    for rec in train[:5] + test[:5]:
        assert set(RECORD_FIELDS) <= set(rec) and {"id", "flags", "missing_fields", "cover_letter_raw"} <= set(rec)
    assert sum(bool(r["missing_fields"]) for r in test) == 8
    assert "726/81/349" in message


def test_real_data_report(real_run):
    out, _ = real_run
    report = json.loads((out / "data" / "report.json").read_text())
    assert [o["id"] for o in report["test_overlap"]["rows"]] == [
        "train-27", "train-153", "train-158", "train-208", "train-556"]
    assert report["test_overlap"]["dropped"] == 4
    assert [d["id"] for d in report["duplicates"]["train"]] == ["train-208", "train-695"]
    assert report["cleaning"]["test"]["strip"] == 6
    flags = report["flags"]
    assert flags["all"]["rows"] == 1162 and flags["all"]["empty_inputs"] == 24
    assert 0.05 <= flags["share"]["generic"] <= 0.15
    assert report["splits"]["test"]["written"] == 349
    md = (out / "data" / "report.md").read_text()
    for text in ("## Cleaning rules", "## Quality flags", "`train-556` ~ `test-125`", "## Flagged examples",
                 "![", "letter_words_by_split.png"):
        assert text in md
    for name in report["plots"]:
        assert (out / "data" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_skipped_only_when_built_from_the_same_settings_and_redone_with_force(tmp_path):
    out = tmp_path / "run"
    assert "wrote" in run_data(DataConfig(data="sample", out=str(out)))
    assert "skipped" in run_data(DataConfig(data="sample", out=str(out)))
    # other settings: refused, naming what changed and --force, and the splits are left as they were
    with pytest.raises(StaleStage, match=r"val_size 0\.1 -> 5(\.0)?.*pass --force"):
        run_data(DataConfig(data="sample", out=str(out), val_size=5))
    assert rundir.is_done(out, "data")
    msg = run_data(DataConfig(data="sample", out=str(out), val_size=5, force=True))
    assert "wrote" in msg and len(io.read_jsonl(out / "data" / "validation.jsonl")) == 5
    assert "skipped" in run_data(DataConfig(data="sample", out=str(out), val_size=5))


def test_another_dataset_in_the_same_run_is_refused(tmp_path):
    """A run directory built from one dataset never serves another's splits as complete."""
    import shutil

    from covertune.data.sample import sample_dir

    out, copy = tmp_path / "run", tmp_path / "mine"
    shutil.copytree(sample_dir(), copy)
    run_data(DataConfig(data=str(copy), out=str(out)))
    with pytest.raises(StaleStage, match=r"data was built from other settings.*data \".*mine\" -> \"sample\""):
        run_data(DataConfig(data="sample", out=str(out)))
    # the same path with other contents: its hash differs
    with open(copy / "test.csv", "a", encoding="utf-8") as f:
        f.write(open(copy / "test.csv", encoding="utf-8").read().splitlines()[1] + "\n")
    with pytest.raises(StaleStage, match="dataset changed"):
        run_data(DataConfig(data=str(copy), out=str(out)))


def test_sample_through_the_cli(tmp_path, capsys):
    from covertune.cli import main

    out = tmp_path / "x"
    assert main(["data", "--data", "sample", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    sizes = {s: len(io.read_jsonl(out / "data" / f"{s}.jsonl")) for s in ("train", "validation", "test")}
    assert sizes["test"] == 8 and sizes["validation"] >= 1 and sizes["train"] >= 20
    assert main(["data", "--data", "sample", "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    from covertune.cli import main

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["data", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "missing column(s)" in capsys.readouterr().err


def test_drop_flagged_and_keep_overlap(tmp_path):
    cfg = DataConfig(data="sample", out=str(tmp_path), drop_flags=["generic", "too_short"],
                     drop_test_overlap=False, val_size=2)
    run_data(cfg)
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    rows = io.read_jsonl(tmp_path / "data" / "train.jsonl") + io.read_jsonl(tmp_path / "data" / "validation.jsonl")
    assert not any(f["flag"] in ("generic", "too_short") for r in rows for f in r["flags"])
    assert report["splits"]["train"]["flagged_dropped"] >= 3
    assert report["test_overlap"]["dropped"] == 0 and len(report["test_overlap"]["rows"]) == 1
    assert len(io.read_jsonl(tmp_path / "data" / "validation.jsonl")) == 2
    assert len(io.read_jsonl(tmp_path / "data" / "test.jsonl")) == 8  # test never filtered


def test_bad_options(tmp_path):
    with pytest.raises(ValueError, match="unknown flag"):
        run_data(DataConfig(data="sample", out=str(tmp_path), drop_flags=["nope"]))
    with pytest.raises(ValueError, match="val_size"):
        run_data(DataConfig(data="sample", out=str(tmp_path), val_size=500))
