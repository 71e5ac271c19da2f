"""Supervised fine-tuning examples: a record -> input_ids, attention_mask and prompt-masked labels.

An example is the prompt's ids followed by the letter's ids and EOS:

    prompt_ids(record, tokenizer, prompt_format) + letter_ids(letter, tokenizer, prompt_format) + [EOS]

``covertune.core.prompt.prompt_ids`` is the one encoding of a prompt: generation feeds exactly these ids
(raw: BOS, the schema and the separator's ids; chat: the template's text, ending with the assistant
header), so the fine-tuned model continues where it learned to, and no BOS is re-added in the middle.
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
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from covertune.core.prompt import letter_ids, prompt_ids
from covertune.core.records import ID_FIELD, TARGET_FIELD

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value that cross-entropy ignores
LOSS_WEIGHT = "loss_weight"  # an example's (and a batch's) row weight, when train's flag_weights is set


def letter_of(record: dict) -> str:
    return str(record.get(TARGET_FIELD, "") or "").strip()


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
    if loss_on not in ("letter", "all"):
        raise ValueError(f"loss_on must be letter or all, got {loss_on!r}")
    prompt = prompt_ids(record, tokenizer, prompt_format)
    completion_ids = letter_ids(letter_of(record), tokenizer, prompt_format) + [tokenizer.eos_token_id]
    room = max_length - len(prompt)
    if room <= 0:
        return None
    truncated = len(completion_ids) > room
    if truncated:
        completion_ids = completion_ids[:room]  # the cut removes the EOS with the letter's end
    input_ids = prompt + completion_ids
    if loss_on == "letter":
        labels = [IGNORE_INDEX] * len(prompt) + completion_ids
    else:
        labels = list(input_ids)
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels,
            "prompt_length": len(prompt), "truncated": truncated}


def encode_records(records: list[dict], tokenizer, max_length: int, prompt_format: str = "raw",
                   loss_on: str = "letter", split: str = "train",
                   loss_weight: Callable[[dict], float] | None = None) -> Encoded:
    """Tokenize a split under the truncation policy (module docstring). Rows without a letter are
    skipped (they would teach the model to stop at once); rows whose prompt fills max_length are
    skipped with a warning, and it is a ValueError if no row is left. ``loss_weight``: each example
    carries ``loss_weight(record)`` under "loss_weight" (train's flag_weights); None: no such key."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the model could not learn to stop")
    out = Encoded()
    for n, record in enumerate(records):
        rid = str(record.get(ID_FIELD, f"{split}-{n}"))
        if not letter_of(record):
            out.empty.append(rid)
            continue
        ex = encode_example(record, tokenizer, max_length, prompt_format, loss_on)
        if ex is None:
            out.skipped.append((rid, len(prompt_ids(record, tokenizer, prompt_format))))
            continue
        ex["id"] = rid
        if loss_weight is not None:
            ex[LOSS_WEIGHT] = float(loss_weight(record))
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
    pad token should differ from EOS anyway: models.load_tokenizer makes sure). Examples that carry a
    "loss_weight" (train's flag_weights) give the batch a float "loss_weight" of one weight per row."""

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
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        if LOSS_WEIGHT in features[0]:
            out[LOSS_WEIGHT] = torch.tensor([float(f[LOSS_WEIGHT]) for f in features], dtype=torch.float32)
        return out
