"""The prompt contract against the reference run, on all 349 test rows in test-split order."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.core import io
from covertune.config.stages import DataConfig
from covertune.core.prompt import extract_letter, render_prompt


def read(path):
    return pd.read_csv(path, keep_default_na=False, dtype=str)


@pytest.fixture(scope="module")
def test_records(dataset_dir, tmp_path_factory):
    from covertune.stages.data import run_data

    out = tmp_path_factory.mktemp("prompt-run")
    run_data(DataConfig(data=str(dataset_dir), out=str(out)))
    return io.read_jsonl(out / "data" / "test.jsonl")


def test_render_prompt_matches_the_reference_byte_for_byte(test_records, reference_dir):
    prompts = read(reference_dir / "eval.csv")["prompt"].tolist()
    assert len(test_records) == len(prompts) == 349
    mismatched = [i for i, (rec, ref) in enumerate(zip(test_records, prompts)) if render_prompt(rec) != ref]
    assert mismatched == []


def test_extract_letter_matches_the_reference_cleaning(reference_dir):
    raw = read(reference_dir / "eval.csv")
    cleaned = read(reference_dir / "cleaned_eval.csv")
    assert len(raw) == len(cleaned) == 349
    for column in ("base_output", "fine_tuned_output"):
        mismatched = [i for i, (out, ref) in enumerate(zip(raw[column], cleaned[column]))
                      if extract_letter(out) != ref]
        assert mismatched == [], column
