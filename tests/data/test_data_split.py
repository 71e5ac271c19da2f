"""Duplicates, train/test overlap (on the real data), flag filtering and the validation split."""

from __future__ import annotations

import pytest

from covertune.data.clean import clean_records
from covertune.data.load import load
from covertune.data.split import carve_validation, dedupe, drop_flagged, input_overlap, validation_count
from covertune.core.records import RECORD_FIELDS


def make(i, **over):
    r = {k: f"{k} {i}" for k in RECORD_FIELDS}
    r["id"] = f"train-{i}"
    r["flags"] = []
    r.update(over)
    return r


def test_dedupe_keeps_the_first_of_equal_rows():
    a, b = make(0), make(1)
    c = dict(a, id="train-2")
    d = dict(a, id="train-3", cover_letter="other letter")  # same inputs, other letter: not a duplicate
    kept, removed = dedupe([a, b, c, d])
    assert [r["id"] for r in kept] == ["train-0", "train-1", "train-3"]
    assert removed == [{"id": "train-2", "duplicate_of": "train-0"}]


def test_overlap_on_inputs_only():
    test = [dict(make(0), id="test-0", cover_letter="a different letter")]
    hits = input_overlap([make(0), make(1)], test)
    assert hits == [{"id": "train-0", "test_id": "test-0", "same_letter": False}]


def test_drop_flagged_all_or_some():
    rows = [make(0), make(1, flags=[{"flag": "generic", "reason": "x"}]),
            make(2, flags=[{"flag": "too_short", "reason": "y"}])]
    kept, dropped = drop_flagged(rows)
    assert [r["id"] for r in kept] == ["train-0"] and len(dropped) == 2
    kept, dropped = drop_flagged(rows, ["generic"])
    assert [r["id"] for r in kept] == ["train-0", "train-2"]


def test_validation_split_is_seeded_and_ordered():
    rows = [make(i) for i in range(50)]
    t1, v1 = carve_validation(rows, 0.1, seed=7)
    t2, v2 = carve_validation(rows, 0.1, seed=7)
    _, v3 = carve_validation(rows, 0.1, seed=8)
    assert [r["id"] for r in v1] == [r["id"] for r in v2] != [r["id"] for r in v3]
    assert len(v1) == 5 and len(t1) == 45
    assert {r["id"] for r in t1}.isdisjoint({r["id"] for r in v1})
    assert [r["id"] for r in t1] == [r["id"] for r in rows if r not in v1]  # source order kept
    assert len(carve_validation(rows, 12, seed=7)[1]) == 12
    assert carve_validation(rows, 0, seed=7)[1] == []


def test_validation_count_errors():
    assert validation_count(10, 0.01) == 1
    with pytest.raises(ValueError, match="only 10"):
        validation_count(10, 10)
    with pytest.raises(ValueError, match="whole number"):
        validation_count(10, 2.5)


def test_real_data_duplicates_and_overlap(dataset_dir):
    splits, _ = load(str(dataset_dir))
    for s in splits.values():
        clean_records(s.records)
    train, test = splits["train"].records, splits["test"].records
    kept, removed = dedupe(train)
    assert removed == [{"id": "train-208", "duplicate_of": "train-27"},
                       {"id": "train-695", "duplicate_of": "train-97"}]
    hits = input_overlap(train, test)
    assert [h["id"] for h in hits] == ["train-27", "train-153", "train-158", "train-208", "train-556"]
    assert [h["test_id"] for h in hits] == ["test-327", "test-12", "test-327", "test-327", "test-125"]
    assert [h["same_letter"] for h in hits] == [True, False, False, True, False]
    assert len(input_overlap(kept, test)) == 4
    assert dedupe(test)[1] == []
