"""covertune.core.limits: the model's context length, per-row problems and generate's context check."""

from __future__ import annotations

import json

import pytest

from covertune.core import limits
from covertune.models.load import context_length
from covertune.core.records import RECORD_FIELDS


def _record(i: int, **fields) -> dict:
    rec = {k: f"{k} {i}" for k in RECORD_FIELDS}
    rec.update(id=f"train-{i}", cover_letter=f"Dear team, letter {i}.")
    rec.update(fields)
    return rec


def test_context_length_from_config(tmp_path, tiny_model_dir):
    assert context_length(str(tiny_model_dir)) == 2048  # the tiny Llama's max_position_embeddings
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    assert context_length(str(tmp_path)) == 1024
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    assert context_length(str(tmp_path)) == 4096
    (tmp_path / "config.json").unlink()  # a folder holding only a tokenizer: unknown
    assert context_length(str(tmp_path)) is None


def test_check_rows_first_problem_per_row(tiny_model_dir):
    from covertune.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    rows = [_record(0), _record(1, skillsets="x" * 51, cover_letter=""), _record(2, cover_letter=" 7 "),
            _record(3, qualifications="word " * 9), _record(4, cover_letter="")]
    from covertune.core.prompt import prompt_ids

    limit = len(prompt_ids(rows[0], tok, "raw"))  # row 0's prompt fits exactly; row 3's is longer
    problems = limits.check_rows(rows, 50, limit, tok)
    assert sorted(problems) == [1, 2, 3, 4]
    assert problems[1] == {"id": "train-1", "field": "Skillsets", "kind": "limit",
                           "reason": "51 characters, over the limit of 50 (--max-field-chars; 0: no limit)"}
    assert (problems[2]["field"], problems[2]["kind"]) == ("Cover Letter", "letter")
    assert "'7' is not a letter" in problems[2]["reason"]
    assert problems[4]["reason"].startswith("empty")
    assert (problems[3]["field"], problems[3]["kind"]) == ("prompt", "limit")
    assert f"over the limit of {limit:,} (--max-prompt-tokens" in problems[3]["reason"]
    # no limits: only the letters are checked, and no tokenizer is needed
    assert sorted(limits.check_rows(rows, 0, 0)) == [1, 2, 4]
    # a context below the limit caps it
    capped = limits.check_rows(rows[:1], 0, 10_000, tok, context=8)
    assert "over the model's context of 8 tokens" in capped[0]["reason"]


def test_check_context():
    limits.check_context([5, 90], ["a", "b"], 100, 10)  # fits exactly
    limits.check_context([5, 90], ["a", "b"], None, 10**6)  # unknown context: nothing checked
    with pytest.raises(ValueError, match=r"^x.jsonl: row b: the prompt is 91 tokens; with --max-new-tokens 10 it "
                                         r"does not fit the model's context of 100 tokens \(and 1 more row\(s\)\)"):
        limits.check_context([5, 91, 2000], ["a", "b", "c"], 100, 10, source="x.jsonl")
