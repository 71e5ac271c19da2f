"""Exact duplicates, train/test input overlap, flag filtering and the seeded validation split."""

from __future__ import annotations

import random

from covertune.core.records import ID_FIELD, INPUT_FIELDS, RECORD_FIELDS
from covertune.data.quality import flag_names


def _key(rec: dict, fields=RECORD_FIELDS) -> tuple:
    return tuple(rec[k] for k in fields)


def dedupe(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Keep the first of each group of records whose 9 fields are equal (letters as cleaned).

    Returns (kept, removed) where removed lists {"id", "duplicate_of"}."""
    first: dict[tuple, str] = {}
    kept, removed = [], []
    for rec in records:
        key = _key(rec)
        if key in first:
            removed.append({"id": rec[ID_FIELD], "duplicate_of": first[key]})
        else:
            first[key] = rec[ID_FIELD]
            kept.append(rec)
    return kept, removed


def duplicates(records: list[dict]) -> list[dict]:
    """The exact duplicates ``dedupe`` would remove, without removing them (for the test split)."""
    return dedupe(records)[1]


def input_overlap(records: list[dict], test: list[dict]) -> list[dict]:
    """Records whose 8 input fields equal a test row's: [{"id", "test_id", "same_letter"}]."""
    test_keys: dict[tuple, dict] = {}
    for rec in test:
        test_keys.setdefault(_key(rec, INPUT_FIELDS), rec)
    out = []
    for rec in records:
        hit = test_keys.get(_key(rec, INPUT_FIELDS))
        if hit is not None:
            out.append({"id": rec[ID_FIELD], "test_id": hit[ID_FIELD],
                        "same_letter": rec["cover_letter"] == hit["cover_letter"]})
    return out


def drop_ids(records: list[dict], ids) -> list[dict]:
    ids = set(ids)
    return [r for r in records if r[ID_FIELD] not in ids]


def drop_flagged(records: list[dict], flags: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    """Split records into (kept, dropped): dropped carry any flag (or any of ``flags`` if given)."""
    wanted = set(flags or [])
    kept, dropped = [], []
    for rec in records:
        names = set(flag_names(rec))
        (dropped if (names & wanted if wanted else names) else kept).append(rec)
    return kept, dropped


def validation_count(n: int, val_size: float) -> int:
    """Rows for validation out of ``n``: a fraction (< 1, rounded, at least 1 when > 0) or a count."""
    if val_size < 0:
        raise ValueError(f"val_size must be >= 0, got {val_size}")
    if val_size == 0:
        return 0
    if val_size < 1:
        k = max(1, round(val_size * n))
    else:
        if val_size != int(val_size):
            raise ValueError(f"val_size >= 1 is a row count and must be a whole number, got {val_size}")
        k = int(val_size)
    if k >= n:
        raise ValueError(f"val_size={val_size} asks for {k} validation rows but train has only {n} "
                         "after filtering; use a smaller --val-size")
    return k


def carve_validation(records: list[dict], val_size: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded random choice of rows; both keep their source order."""
    k = validation_count(len(records), val_size)
    chosen = set(random.Random(seed).sample(range(len(records)), k))
    train = [r for i, r in enumerate(records) if i not in chosen]
    val = [r for i, r in enumerate(records) if i in chosen]
    return train, val
