"""The data stage's limits and letter checks: per field (characters) and per prompt (tokens of the model's
tokenizer) on every split; over-limit or letter-less train/validation rows are dropped and reported, a test
row that breaks one is an error naming the row and field; 0 turns a limit off."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covertune.core import io
from covertune.config.stages import DataConfig
from covertune.data.sample import sample_path
from covertune.stages.data import run_data

BIG = "word " * 200_000  # 1 MB


def _dataset(tmp_path, train_edits=(), test_edits=()):
    """The packaged sample as a folder of train.csv/test.csv with cells replaced: (row, column, text)."""
    folder = tmp_path / "dataset"
    folder.mkdir(parents=True)
    for name, edits in (("train", train_edits), ("test", test_edits)):
        frame = pd.read_csv(sample_path().parent / f"{name}.csv", dtype=str, keep_default_na=False)
        for row, col, text in edits:
            frame.loc[row, col] = text
        frame.to_csv(folder / f"{name}.csv", index=False)
    return str(folder)


def _cfg(data, tmp_path, tiny_model_dir, **kw):
    return DataConfig(data=data, out=str(tmp_path / "run"), model=str(tiny_model_dir), val_size=2, **kw)


def test_a_1mb_test_field_is_an_error_naming_row_and_field(tmp_path, tiny_model_dir, capsys):
    from covertune.cli import main

    data = _dataset(tmp_path, test_edits=[(3, "Skillsets", BIG)])
    assert main(["data", "--data", data, "--out", str(tmp_path / "run"), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "test row test-3" in err and "Skillsets" in err and "1,000,000 characters" in err
    assert "--max-field-chars" in err
    assert not (tmp_path / "run" / "data" / "test.jsonl").exists()


def test_test_fields_and_letters_are_checked_before_the_tokenizer_loads(tmp_path):
    data = _dataset(tmp_path, test_edits=[(1, "Cover Letter", "none")])
    with pytest.raises(ValueError, match="test row test-1, field Cover Letter: 'none' is not a letter"):
        run_data(DataConfig(data=data, out=str(tmp_path / "run"), model=str(tmp_path / "no-such-model")))


def test_over_limit_train_rows_are_dropped_and_reported(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, train_edits=[(2, "Qualifications", BIG), (5, "Cover Letter", "x" * 20_001)])
    run_data(_cfg(data, tmp_path, tiny_model_dir))
    out = tmp_path / "run" / "data"
    kept = {r["id"] for s in ("train", "validation") for r in io.read_jsonl(out / f"{s}.jsonl")}
    assert "train-2" not in kept and "train-5" not in kept and "train-4" in kept
    report = json.loads((out / "report.json").read_text())
    skipped = {d["id"]: d for d in report["limits"]["dropped"]}
    assert set(skipped) == {"train-2", "train-5"}
    assert skipped["train-2"]["field"] == "Qualifications" and "1,000,000 characters" in skipped["train-2"]["reason"]
    assert skipped["train-5"]["field"] == "Cover Letter"
    assert report["splits"]["train"]["invalid_dropped"] == 2
    assert report["limits"]["max_field_chars"] == 20_000
    md = (out / "report.md").read_text()
    assert "`train-2`" in md and "Qualifications" in md


def test_prompt_token_limit_on_every_split(tmp_path, tiny_model_dir):
    from covertune.models.load import load_tokenizer
    from covertune.core.prompt import prompt_ids
    from covertune.core.records import from_source_row

    long_field = "experienced engineer " * 150  # 3,150 characters: under the field limit
    data = _dataset(tmp_path, train_edits=[(1, "Past Working Experience", long_field)])
    tok = load_tokenizer(str(tiny_model_dir))
    frame = pd.read_csv(sample_path().parent / "train.csv", dtype=str, keep_default_na=False)
    row = from_source_row(frame.iloc[1].to_dict())
    row["past_experience"] = long_field
    tokens = len(prompt_ids(row, tok, "raw"))  # the ids generate feeds
    limit = tokens - 1
    run_data(_cfg(data, tmp_path, tiny_model_dir, max_prompt_tokens=limit))
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    dropped = report["limits"]["dropped"]
    assert [d["id"] for d in dropped] == ["train-1"] and dropped[0]["field"] == "prompt"
    assert f"{tokens:,} tokens" in dropped[0]["reason"] and f"{limit:,}" in dropped[0]["reason"]

    data = _dataset(tmp_path / "t", test_edits=[(6, "Past Working Experience", long_field)])
    with pytest.raises(ValueError, match=r"test row test-6, prompt: .* tokens.*--max-prompt-tokens"):
        run_data(_cfg(data, tmp_path / "t", tiny_model_dir, max_prompt_tokens=limit))


def test_the_prompt_limit_is_capped_at_the_models_context(tmp_path, tiny_model_dir):
    long_field = "engineer " * 1200  # ~10,800 characters: more tokens than the tiny model's 2,048 positions
    data = _dataset(tmp_path, test_edits=[(0, "Skillsets", long_field)])
    with pytest.raises(ValueError, match=r"test row test-0, prompt: .*context of 2,048 tokens"):
        run_data(_cfg(data, tmp_path, tiny_model_dir, max_prompt_tokens=100_000))


@pytest.mark.parametrize("letter, what", [("", "empty"), ("   \n ", "empty"), ("3.5", "'3.5' is not a letter"),
                                          ("N/A", "'N/A' is not a letter")])
def test_test_letters_evaluate_would_reject_are_errors(tmp_path, tiny_model_dir, letter, what):
    data = _dataset(tmp_path, test_edits=[(4, "Cover Letter", letter)])
    with pytest.raises(ValueError) as e:
        run_data(_cfg(data, tmp_path, tiny_model_dir))
    msg = str(e.value)
    assert "test row test-4, field Cover Letter" in msg and what in msg and "\n" not in msg


def test_letterless_train_rows_are_dropped(tmp_path, tiny_model_dir):
    data = _dataset(tmp_path, train_edits=[(0, "Cover Letter", "nan"), (3, "Cover Letter", "")])
    run_data(_cfg(data, tmp_path, tiny_model_dir))
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert {d["id"]: d["field"] for d in report["limits"]["dropped"]} == {"train-0": "Cover Letter",
                                                                          "train-3": "Cover Letter"}


def test_zero_turns_the_limits_off(tmp_path):
    data = _dataset(tmp_path, train_edits=[(2, "Skillsets", "python " * 5000)])
    run_data(DataConfig(data=data, out=str(tmp_path / "run"), model="no/such-model", val_size=2,
                        max_field_chars=0, max_prompt_tokens=0))  # no tokenizer is loaded
    kept = {r["id"] for s in ("train", "validation") for r in io.read_jsonl(tmp_path / "run" / "data" / f"{s}.jsonl")}
    assert "train-2" in kept


def test_bad_limits(tmp_path):
    with pytest.raises(ValueError, match="max_field_chars"):
        run_data(DataConfig(data="sample", out=str(tmp_path), max_field_chars=-1))
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        run_data(DataConfig(data="sample", out=str(tmp_path), max_prompt_tokens=-5))


def test_limit_errors_say_which_limit_to_raise_and_letter_errors_do_not(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="or raise the limit$"):
        run_data(_cfg(_dataset(tmp_path / "a", test_edits=[(1, "Job Title", "x" * 101)]), tmp_path / "a",
                      tiny_model_dir, max_field_chars=100))
    with pytest.raises(ValueError, match="fix or remove the row in the dataset$"):
        run_data(_cfg(_dataset(tmp_path / "b", test_edits=[(1, "Cover Letter", "42")]), tmp_path / "b",
                      tiny_model_dir))


def test_no_train_row_left(tmp_path, tiny_model_dir):
    rows = len(pd.read_csv(sample_path().parent / "train.csv", dtype=str, keep_default_na=False))
    data = _dataset(tmp_path, train_edits=[(i, "Cover Letter", "") for i in range(rows)])
    with pytest.raises(ValueError, match="no train rows left after removing rows over a limit or without a letter"):
        run_data(_cfg(data, tmp_path, tiny_model_dir))
