"""sft_data: prompt-masked labels, the truncation policy, the padding collator."""

from __future__ import annotations

import pandas as pd
import pytest

from covertune.core.prompt import LETTER_SEPARATOR, format_prompt, prompt_ids, separator_ids
from covertune.core.records import from_source_row
from covertune.training.sft_data import IGNORE_INDEX, PadCollator, encode_example, encode_records


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from covertune.models.load import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def records(dataset_dir):
    frame = pd.read_csv(dataset_dir / "train.csv", dtype=str, keep_default_na=False).head(6)
    rows = [from_source_row(r) for r in frame.to_dict("records")]
    for n, r in enumerate(rows):
        r.update(id=f"train-{n}", flags=[], missing_fields=[])
    return rows


def test_pad_distinct_from_eos(tokenizer):
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


@pytest.mark.parametrize("prompt_format", ["raw", "chat"])
def test_prompt_part_of_an_example_is_what_generation_feeds(tokenizer, records, prompt_format):
    """The masked part of every training example is prompt_ids, the ids generation feeds: the text
    tokenized with the tokenizer's special tokens plus the separator's ids (raw), or the chat template's
    text alone (chat)."""
    for rec in records:
        ex = encode_example(rec, tokenizer, max_length=4096, prompt_format=prompt_format)
        n = ex["prompt_length"]
        assert ex["input_ids"][:n] == prompt_ids(rec, tokenizer, prompt_format)
        assert ex["labels"][:n] == [IGNORE_INDEX] * n and ex["labels"][n] != IGNORE_INDEX
        text = format_prompt(rec, prompt_format, tokenizer)
        if prompt_format == "raw":
            expected = tokenizer(text).input_ids + tokenizer("\n", add_special_tokens=False).input_ids * 2
            assert tokenizer.decode(ex["input_ids"][:n], skip_special_tokens=True) == text + "\n\n"
        else:
            expected = tokenizer(text, add_special_tokens=False).input_ids
            assert tokenizer.decode(ex["input_ids"][:n]).endswith("<|im_start|>assistant\n")
        assert ex["input_ids"][:n] == expected


@pytest.mark.parametrize("prompt_format", ["raw", "chat"])
def test_labels_mask_prompt_keep_letter_and_eos(tokenizer, records, prompt_format):
    rec = records[0]
    ex = encode_example(rec, tokenizer, max_length=4096, prompt_format=prompt_format)
    prompt = prompt_ids(rec, tokenizer, prompt_format)
    n = len(prompt)
    if prompt_format == "raw":  # the letter as it reads after the separator, the separator's ids taken off
        joint = tokenizer(LETTER_SEPARATOR + rec["cover_letter"].strip(), add_special_tokens=False)["input_ids"]
        sep = separator_ids(tokenizer)
        assert joint[:len(sep)] == sep
        letter_ids = joint[len(sep):]
    else:
        letter_ids = tokenizer(rec["cover_letter"].strip(), add_special_tokens=False)["input_ids"]
    assert not ex["truncated"] and ex["prompt_length"] == n
    assert ex["input_ids"] == prompt + letter_ids + [tokenizer.eos_token_id]
    assert ex["attention_mask"] == [1] * len(ex["input_ids"])
    # token by token: every prompt token masked, every letter token and the final EOS kept
    for i, (tok, lab) in enumerate(zip(ex["input_ids"], ex["labels"])):
        assert lab == (IGNORE_INDEX if i < n else tok), i
    assert ex["labels"][-1] == tokenizer.eos_token_id
    # the prompt/completion boundary is exact: the decoded pieces are the texts
    assert tokenizer.decode(ex["input_ids"][n:-1]) == rec["cover_letter"].strip()
    if prompt_format == "chat":
        assert tokenizer.decode(ex["input_ids"][:n]).endswith("<|im_start|>assistant\n")
        assert ex["input_ids"][-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # no BOS re-added in the middle
    if tokenizer.bos_token_id is not None:
        assert tokenizer.bos_token_id not in ex["input_ids"][n:]


def test_loss_on_all(tokenizer, records):
    ex = encode_example(records[1], tokenizer, max_length=4096, loss_on="all")
    assert ex["labels"] == ex["input_ids"]
    assert ex["labels"][-1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="loss_on"):
        encode_example(records[1], tokenizer, max_length=4096, loss_on="prompt")


def test_truncation_keeps_prompt_cuts_letter_without_eos(tokenizer, records):
    rec = records[2]
    full = encode_example(rec, tokenizer, max_length=4096)
    n = full["prompt_length"]
    limit = n + 10
    ex = encode_example(rec, tokenizer, max_length=limit)
    assert ex["truncated"] and len(ex["input_ids"]) == limit
    assert ex["input_ids"][:n] == full["input_ids"][:n]  # the prompt whole
    assert ex["input_ids"][n:] == full["input_ids"][n:limit]  # the letter's beginning
    assert tokenizer.eos_token_id not in ex["input_ids"][n:]  # a cut letter gets no EOS
    assert ex["labels"] == [IGNORE_INDEX] * n + full["input_ids"][n:limit]
    # exactly fitting: the EOS stays
    exact = encode_example(rec, tokenizer, max_length=len(full["input_ids"]))
    assert not exact["truncated"] and exact["input_ids"] == full["input_ids"]
    # one token short: the EOS is what goes
    short = encode_example(rec, tokenizer, max_length=len(full["input_ids"]) - 1)
    assert short["truncated"] and short["input_ids"] == full["input_ids"][:-1]


def test_prompt_too_long_skips_rows_or_errors(tokenizer, records, caplog):
    lengths = [encode_example(r, tokenizer, 4096)["prompt_length"] for r in records]
    # a limit between the shortest and the longest prompt: the long ones are skipped with a warning
    limit = sorted(lengths)[len(lengths) // 2]
    enc = encode_records(records, tokenizer, max_length=limit)
    skipped_ids = {rid for rid, _ in enc.skipped}
    assert skipped_ids == {r["id"] for r, n in zip(records, lengths) if n >= limit}
    assert len(enc.examples) == sum(n < limit for n in lengths)
    assert "leaving no room for the letter" in caplog.text
    # every prompt too long: a clear error naming a row and the lengths
    with pytest.raises(ValueError, match=r"train-\d+ \(\d+ tokens\).*raise --max-length above"):
        encode_records(records, tokenizer, max_length=min(lengths))


def test_empty_letter_rows_skipped(tokenizer, records):
    rows = [dict(records[0], cover_letter="  "), records[1]]
    enc = encode_records(rows, tokenizer, max_length=4096)
    assert enc.empty == ["train-0"] and [e["id"] for e in enc.examples] == ["train-1"]


def test_collator_pads_right_with_pad_and_ignore(tokenizer, records):
    exs = [encode_example(r, tokenizer, max_length=4096) for r in records[:3]]
    batch = PadCollator(tokenizer.pad_token_id)(exs)
    longest = max(len(e["input_ids"]) for e in exs)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, longest)
    for row, e in enumerate(exs):
        n = len(e["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == e["input_ids"]
        assert batch["labels"][row, :n].tolist() == e["labels"]
        assert batch["input_ids"][row, n:].tolist() == [tokenizer.pad_token_id] * (longest - n)
        assert batch["labels"][row, n:].tolist() == [IGNORE_INDEX] * (longest - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        # the EOS is kept in the labels and attended
        assert batch["labels"][row, n - 1] == tokenizer.eos_token_id
        assert batch["attention_mask"][row, n - 1] == 1
    padded = PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(exs)
    assert padded["input_ids"].shape[1] % 8 == 0
