"""The data contracts every stage shares: the example record, column names, eval.csv columns.

A record is a plain dict. Its keys are the snake_case names below; the dataset's original column
names (``SOURCE_COLUMNS``) map onto them one to one. Input fields hold the text exactly as the
dataset has it (nulls become ""), so the prompt renders byte for byte as the reference's did.
"""

from __future__ import annotations

import re

# original dataset column -> record key, in the dataset's column order
SOURCE_COLUMNS: dict[str, str] = {
    "Job Title": "job_title",
    "Preferred Qualifications": "preferred_qualifications",
    "Hiring Company": "hiring_company",
    "Applicant Name": "applicant_name",
    "Past Working Experience": "past_experience",
    "Current Working Experience": "current_experience",
    "Skillsets": "skillsets",
    "Qualifications": "qualifications",
    "Cover Letter": "cover_letter",
}
INPUT_FIELDS: tuple[str, ...] = tuple(v for v in SOURCE_COLUMNS.values() if v != "cover_letter")
TARGET_FIELD = "cover_letter"
RECORD_FIELDS: tuple[str, ...] = (*INPUT_FIELDS, TARGET_FIELD)

# extra keys the data stage adds to every record it writes
ID_FIELD = "id"  # stable "<split>-<row index in the source file>"
FLAGS_FIELD = "flags"  # list of {"flag": name, "reason": text}
# the quality flags the data stage can set (covertune.data.quality says when); train's drop_flags and
# flag_weights name them
FLAG_NAMES: tuple[str, ...] = ("too_short", "no_greeting", "no_signoff", "generic", "collapsed_bullets",
                               "empty_inputs", "ungrounded")
MISSING_FIELD = "missing_fields"  # input fields that were null/empty in the source

# eval.csv, written by generate and read by evaluate (the reference's columns, in its order)
EVAL_COLUMNS: tuple[str, ...] = ("prompt", "ground_truth", "base_output", "fine_tuned_output")
MODEL_COLUMNS: dict[str, str] = {"base": "base_output", "fine_tuned": "fine_tuned_output"}

SPLITS: tuple[str, ...] = ("train", "validation", "test")

# a text that is a bare number or a missing-value marker is not a letter
_NOT_A_LETTER = re.compile(r"^\s*(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|none|null|n/a|na|#n/a|<na>|"
                           r"[-+]?inf(?:inity)?|true|false)\s*$", re.I)


def not_a_letter(text: str) -> bool:
    """Whether a non-empty text is a bare number or a missing-value marker ("3.5", "nan", "N/A") rather
    than a letter. The data stage and evaluate reject such letters alike."""
    return bool(_NOT_A_LETTER.match(text))


def inputs_of(record: dict) -> dict[str, str]:
    """The eight input fields of a record, as strings."""
    return {k: str(record.get(k, "") or "") for k in INPUT_FIELDS}


def from_source_row(row: dict) -> dict:
    """Map a row keyed by the dataset's original column names onto record keys (missing -> "")."""
    out = {}
    for src, key in SOURCE_COLUMNS.items():
        value = row.get(src)
        out[key] = "" if value is None or value != value else str(value)  # value != value: NaN
    return out
