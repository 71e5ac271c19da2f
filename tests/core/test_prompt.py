"""The prompt contract against the reference run, on all 349 test rows in test-split order, and the
prompt parser (render_prompt's inverse) against real rows."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.core import io
from covertune.config.stages import DataConfig
from covertune.core.prompt import extract_letter, parse_prompt, render_prompt, try_parse_prompt
from covertune.core.records import INPUT_FIELDS, from_source_row, inputs_of


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


# ---------------------------------------------------------------- parse_prompt (against real rows)


def inputs(**kw) -> dict:
    return {k: kw.get(k, "") for k in INPUT_FIELDS}


def _no_none(record: dict) -> dict:
    # a field that is literally "None" renders like an empty one; both parse back as ""
    return {k: "" if v == "None" else v for k, v in record.items()}


def test_parse_inverts_render_on_real_rows(dataset_dir):
    n = 0
    for split in ("train", "test"):
        frame = pd.read_csv(dataset_dir / f"{split}.csv", dtype=str, keep_default_na=False)
        for row in frame.to_dict("records"):
            record = inputs_of(from_source_row(row))
            assert parse_prompt(render_prompt(record)) == _no_none(record)
            n += record == _no_none(record)
    assert n > 1100  # all but a handful of rows round-trip exactly


def test_parse_reads_the_reference_prompts(reference_dir, dataset_dir):
    ref = pd.read_csv(reference_dir / "cleaned_eval.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False)
    for prompt, row in zip(ref.prompt, test.to_dict("records")):
        assert parse_prompt(prompt) == _no_none(inputs_of(from_source_row(row)))


def test_parse_none_fields_and_chat_wrapping():
    record = inputs(job_title="Data Scientist", hiring_company="XYZ Corp", applicant_name="Ann Lee",
                    skillsets="Python\nSQL")
    prompt = render_prompt(record)
    assert "Qualifications: None" in prompt
    assert parse_prompt(prompt) == record
    wrapped = "<|im_start|>user\n" + prompt + "<|im_end|>\n<|im_start|>assistant\n"
    assert parse_prompt(wrapped) == record
    with pytest.raises(ValueError, match="prompt schema"):
        parse_prompt("Write a cover letter for a data scientist.")
    assert try_parse_prompt("") is None
