"""Supervised fine-tuning examples: a record -> input_ids, attention_mask and prompt-masked labels.

An example is the prompt followed by the completion:

    raw:  format_prompt(record)                  + "\\n\\n" + letter + EOS
    chat: format_prompt(record, "chat", tok)     +            letter + EOS   (the prompt ends with the
                                                                              assistant header)

The prompt and the completion are tokenized separately and their ids concatenated, so the boundary
is exact: the prompt's ids are the ids generation starts from (``encode_prompt``), and no BOS is
re-added in the middle. The raw separator is tokenized with the letter (it belongs to the completion)
and generation feeds the prompt's ids followed by the separator's ids as they are tokenized before a
letter (covertune.generate.prompt_encoding), so the fine-tuned model continues with the letter.
EOS is appended as an id (``tokenizer.eos_token_id``; for ChatML tokenizers that is ``<|im_end|>``),
never as text, so the model learns to stop.

Labels: by default (``loss_on="letter"``) the prompt's labels are -100 and the letter and its EOS
carry the loss; ``loss_on="all"`` trains on every token, as the reference did.

Truncation policy (``max_length`` tokens per example):
  1. The prompt is always kept whole: the letter is conditioned on all of the job and resume.
  2. If prompt + letter + EOS is longer than ``max_length``, the letter is cut at its end and gets no
     EOS (the letter did not end there; teaching the model to stop mid-sentence would be wrong).
  3. A row whose prompt alone fills ``max_length`` (no letter token fits) is skipped with a warning
     naming its id and lengths; if that leaves no row at all, it is an error (max_length is too short
     for the prompt).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from covertune.prompt import LETTER_SEPARATOR, format_prompt
from covertune.records import ID_FIELD, TARGET_FIELD

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that cross-entropy ignores
LOSS_ON = ("letter", "all")


def encode_prompt(prompt: str, tokenizer, prompt_format: str = "raw") -> list[int]:
    """The prompt's token ids, exactly as training saw them. A raw prompt gets the tokenizer's own
    special tokens (e.g. Llama's BOS); a chat prompt already holds them as text from the template."""
    return tokenizer(prompt, add_special_tokens=(prompt_format == "raw"))["input_ids"]


def completion_text(record: dict, prompt_format: str = "raw") -> str:
    """The completion text (without EOS): the raw separator (raw format) and the letter."""
    letter = str(record.get(TARGET_FIELD, "") or "").strip()
    return (LETTER_SEPARATOR + letter) if prompt_format == "raw" else letter


@dataclass
class Encoded:
    """The tokenized split and what the truncation policy did to it."""

    examples: list[dict] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)  # ids of rows whose letter was cut
    skipped: list[tuple[str, int]] = field(default_factory=list)  # (id, prompt length): prompt too long
    empty: list[str] = field(default_factory=list)  # ids of rows without a letter

    @property
    def tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def loss_tokens(self) -> int:
        return sum(sum(1 for x in e["labels"] if x != IGNORE_INDEX) for e in self.examples)


def encode_example(record: dict, tokenizer, max_length: int, prompt_format: str = "raw",
                   loss_on: str = "letter") -> dict | None:
    """One training example, or None when the prompt alone fills ``max_length``.

    Returns a dict with input_ids, attention_mask, labels (lists of ints), prompt_length and
    truncated (whether the letter was cut, and so has no EOS)."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    prompt_ids = encode_prompt(format_prompt(record, prompt_format, tokenizer), tokenizer, prompt_format)
    completion_ids = tokenizer(completion_text(record, prompt_format), add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    room = max_length - len(prompt_ids)
    if room <= 0:
        return None
    truncated = len(completion_ids) > room
    if truncated:
        completion_ids = completion_ids[:room]  # the cut removes the EOS with the letter's end
    input_ids = prompt_ids + completion_ids
    if loss_on == "letter":
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    else:
        labels = list(input_ids)
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels,
            "prompt_length": len(prompt_ids), "truncated": truncated}


def encode_records(records: list[dict], tokenizer, max_length: int, prompt_format: str = "raw",
                   loss_on: str = "letter", split: str = "train") -> Encoded:
    """Tokenize a split under the truncation policy (module docstring). Rows without a letter are
    skipped (they would teach the model to stop at once); rows whose prompt fills max_length are
    skipped with a warning, and it is a ValueError if no row is left."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the model could not learn to stop")
    out = Encoded()
    for n, record in enumerate(records):
        rid = str(record.get(ID_FIELD, f"{split}-{n}"))
        if not str(record.get(TARGET_FIELD, "") or "").strip():
            out.empty.append(rid)
            continue
        ex = encode_example(record, tokenizer, max_length, prompt_format, loss_on)
        if ex is None:
            n_prompt = len(encode_prompt(format_prompt(record, prompt_format, tokenizer), tokenizer,
                                         prompt_format))
            out.skipped.append((rid, n_prompt))
            continue
        ex["id"] = rid
        out.examples.append(ex)
        if ex["truncated"]:
            out.truncated.append(rid)
    if out.empty:
        log.warning("%s: skipped %d row(s) without a cover letter: %s", split, len(out.empty),
                    ", ".join(out.empty[:5]) + (" ..." if len(out.empty) > 5 else ""))
    if out.skipped:
        shown = ", ".join(f"{rid} ({n} tokens)" for rid, n in out.skipped[:5])
        msg = (f"{split}: {len(out.skipped)} of {len(records)} row(s) have a prompt of max_length="
               f"{max_length} tokens or more, leaving no room for the letter: {shown}"
               + (" ..." if len(out.skipped) > 5 else ""))
        if not out.examples:
            longest = max(n for _, n in out.skipped)
            raise ValueError(f"{msg}. No row fits: raise --max-length above {longest} "
                             f"(the prompt is always kept whole)")
        log.warning("%s; these rows are skipped", msg)
    if out.truncated:
        log.info("%s: %d of %d letter(s) cut at max_length=%d (they carry no EOS)", split,
                 len(out.truncated), len(out.examples), max_length)
    return out


@dataclass
class PadCollator:
    """Pads a batch on the right: input_ids with ``pad_token_id``, attention_mask with 0, labels with
    -100. Padding is located by length, never by comparing ids, so an EOS is never masked (and the
    pad token should differ from EOS anyway: models.load_tokenizer makes sure)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
