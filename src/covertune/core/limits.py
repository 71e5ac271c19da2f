"""Size limits on examples: characters per field, tokens per prompt, and the model's context length.

The data stage checks every row of every split before anything else reads it (``check_rows``):

- each of the 9 fields (the 8 inputs and the letter as loaded) holds at most ``max_field_chars``
  characters (default ``MAX_FIELD_CHARS``);
- the prompt (the raw schema's ids as generate feeds them, ``covertune.core.prompt.prompt_ids``) holds at
  most ``max_prompt_tokens`` tokens of the model's tokenizer (default ``MAX_PROMPT_TOKENS``), and never
  more than the model's context length; the chat template adds a few tokens more;
- the letter as loaded (the reference that ``evaluate`` scores against) is not empty and not a bare
  number or missing-value marker.

A limit of 0 is no limit. Characters are checked first, so a huge field is never tokenized.
``generate`` checks again, in tokens of the prompts it feeds (``check_context``): a prompt and its
``max_new_tokens`` must fit the model's context.
"""

from __future__ import annotations

from typing import Sequence

from covertune.core.prompt import prompt_ids
from covertune.core.records import ID_FIELD, RECORD_FIELDS, SOURCE_COLUMNS, TARGET_FIELD, not_a_letter

COLUMN = {v: k for k, v in SOURCE_COLUMNS.items()}  # record key -> the dataset's column name


def field_problem(record: dict, max_field_chars: int) -> tuple[str, str] | None:
    """(field, reason) for the first field over ``max_field_chars`` characters, or None."""
    if max_field_chars:
        for key in RECORD_FIELDS:
            n = len(record.get(key, ""))
            if n > max_field_chars:
                return COLUMN[key], (f"{n:,} characters, over the limit of {max_field_chars:,} (--max-field-chars; "
                                     "0: no limit)")
    return None


def letter_problem(record: dict) -> tuple[str, str] | None:
    """(field, reason) when the letter as loaded is not one evaluate can score against, or None."""
    letter = record.get(TARGET_FIELD, "").strip()
    if not letter:
        return COLUMN[TARGET_FIELD], "empty; evaluate needs a reference letter for every row"
    if not_a_letter(letter):
        return COLUMN[TARGET_FIELD], f"{letter[:20]!r} is not a letter (a number or a missing-value marker)"
    return None


def prompt_limit(max_prompt_tokens: int, context: int | None) -> tuple[int, str]:
    """The prompt limit in force (0: none) and what sets it, for messages."""
    if not max_prompt_tokens:
        return 0, ""
    if context and context < max_prompt_tokens:
        return context, f"the model's context of {context:,} tokens"
    return max_prompt_tokens, f"the limit of {max_prompt_tokens:,} (--max-prompt-tokens; 0: no limit)"


def check_rows(records: Sequence[dict], max_field_chars: int, max_prompt_tokens: int = 0, tokenizer=None,
               context: int | None = None) -> dict[int, dict]:
    """Position -> {"id", "field", "kind", "reason"} for every record that breaks a limit (kind "limit") or
    has no letter (kind "letter"): the first problem found, fields, then the letter, then the prompt. The tokenizer is needed only with a
    prompt limit; ``context`` (the model's) caps that limit."""
    problems: dict[int, dict] = {}
    for i, rec in enumerate(records):
        too_long = field_problem(rec, max_field_chars)
        found = too_long or letter_problem(rec)
        if found:
            problems[i] = {"id": rec.get(ID_FIELD, str(i)), "field": found[0],
                           "kind": "limit" if too_long else "letter", "reason": found[1]}
    limit, why = prompt_limit(max_prompt_tokens, context)
    todo = [i for i in range(len(records)) if i not in problems]
    if limit and todo:
        ids = [prompt_ids(records[i], tokenizer, "raw") for i in todo]
        for i, tokens in zip(todo, ids):
            if len(tokens) > limit:
                problems[i] = {"id": records[i].get(ID_FIELD, str(i)), "field": "prompt", "kind": "limit",
                               "reason": f"{len(tokens):,} tokens, over {why}"}
    return dict(sorted(problems.items()))


def context_overflow(prompt_tokens: int, max_new_tokens: int, context: int | None,
                     new_tokens: str = "--max-new-tokens") -> tuple[str, str] | None:
    """The one check that a prompt and its ``max_new_tokens`` fit the model's context (None: unknown,
    nothing checked), shared by generate, write and serve: None when they fit, else (what to shorten:
    "prompt" when the prompt alone fills the context, else ``new_tokens``, the option's name; the reason)."""
    if not context or prompt_tokens + max_new_tokens <= context:
        return None
    if prompt_tokens >= context:
        return "prompt", f"the prompt is {prompt_tokens:,} tokens, over the model's context of {context:,} tokens"
    return new_tokens, (f"the prompt is {prompt_tokens:,} tokens; with {new_tokens} {max_new_tokens} it does not "
                        f"fit the model's context of {context:,} tokens")


def check_context(lengths: Sequence[int], ids: Sequence, context: int | None, max_new_tokens: int,
                  source: str = "") -> None:
    """Raise a one-line error naming the first row whose prompt (``lengths``: its tokens as generate
    encodes it) and ``max_new_tokens`` do not fit the model's context (None: unknown, nothing checked)."""
    over = [(row, found) for row, n in zip(ids, lengths) if (found := context_overflow(n, max_new_tokens, context))]
    if over:
        row, (_, reason) = over[0]
        more = f" (and {len(over) - 1} more row(s))" if len(over) > 1 else ""
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}row {row}: {reason}{more}. Shorten the row "
                         "(`covertune data` drops or refuses rows over --max-prompt-tokens) or lower --max-new-tokens")
