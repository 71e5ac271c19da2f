"""covertune.models.tokenizer_file: the llama.cpp path's tokenizer, read from tokenizer.json without
transformers, gives transformers' ids and texts: the 349 test prompts of the embedded model, its letters'
ids decoded back (the end tokens skipped), the EOS and pad ids; where it could differ it steps aside."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from covertune.core import records
from covertune.core.prompt import prompt_ids
from covertune.models import load as models
from covertune.models import tokenizer_file


def _rows(dataset_dir, n=None):
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False)
    return [records.from_source_row(r) for _, r in (frame if n is None else frame.head(n)).iterrows()]


def _same_as_transformers(folder, rows):
    ours = tokenizer_file.load(folder, "raw")
    theirs = models.load_tokenizer(str(folder), padding_side="left")
    assert ours is not None
    assert (ours.eos_token_id, ours.pad_token_id) == (theirs.eos_token_id, theirs.pad_token_id)
    assert ours.pad_token_id != ours.eos_token_id
    for row in rows:
        assert prompt_ids(records.inputs_of(row), ours, "raw") == prompt_ids(records.inputs_of(row), theirs, "raw")
        letter = theirs(row["cover_letter"], add_special_tokens=False)["input_ids"] + [theirs.eos_token_id, 1, 0]
        assert ours(row["cover_letter"], add_special_tokens=False)["input_ids"] == letter[:-3]
        for skip in (True, False):
            assert ours.decode(letter, skip_special_tokens=skip) == theirs.decode(letter, skip_special_tokens=skip)
    return ours


def test_the_embedded_models_349_test_prompts_and_letters(dataset_dir):
    rows = _rows(dataset_dir)
    assert len(rows) == 349
    ours = _same_as_transformers(models.embedded_model_dir(), rows)
    assert ours.decode([ours.eos_token_id], skip_special_tokens=True) == ""


def test_a_tiny_bpe_tokenizer(tiny_model_dir, dataset_dir):
    _same_as_transformers(tiny_model_dir, _rows(dataset_dir, 20))


def test_it_steps_aside_where_transformers_could_differ(tiny_model_dir, tmp_path):
    assert tokenizer_file.load(tiny_model_dir, "chat") is None  # the chat template is transformers' to render
    folder = tmp_path / "tok"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    for change in ({"add_bos_token": True}, {"clean_up_tokenization_spaces": True}, {"pad_token": None, "unk_token": None},
                   {"eos_token": "<|no such token|>"}):
        (folder / "tokenizer_config.json").write_text(json.dumps({**config, **change}))
        assert tokenizer_file.load(folder, "raw") is None, change
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert tokenizer_file.load(folder, "raw") is not None
    (folder / "tokenizer.json").unlink()
    assert tokenizer_file.load(folder, "raw") is None
