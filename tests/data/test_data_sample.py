"""The packaged sample: 9 columns, a test split, and the messy rows it promises."""

from __future__ import annotations

import pandas as pd

from covertune.data.clean import clean_records
from covertune.data.load import load
from covertune.data.quality import flag_records
from covertune.data.sample import sample_dir, sample_path
from covertune.core.records import SOURCE_COLUMNS


def test_sample_files_have_the_nine_columns():
    assert sample_path() == sample_dir() / "train.csv"
    for name, least in (("train.csv", 30), ("test.csv", 5)):
        frame = pd.read_csv(sample_dir() / name, keep_default_na=False, dtype=str)
        assert list(frame.columns) == list(SOURCE_COLUMNS)
        assert len(frame) >= least


def test_sample_is_messy_on_purpose():
    splits, _ = load("sample")
    records = [r for s in splits.values() for r in s.records]
    rules = clean_records(records)
    for rule in ("split_samples", "drop_hash_lines", "collapse_blank_lines", "curly_quotes",
                 "repeated_spaces", "space_before_punctuation", "line_endings", "unicode_spaces", "strip"):
        assert rules[rule] >= 1, rule
    flags = flag_records(records)
    for flag, count in flags.items():
        assert count >= 1, flag
    assert any(r["job_title"].startswith(" ") for r in records)  # inputs are kept as written
