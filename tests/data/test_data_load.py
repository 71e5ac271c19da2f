"""Loading every source format, and a clear error for every kind of bad input."""

from __future__ import annotations

import csv
import json

import pytest

from covertune.data.load import load, read_table, to_records
from covertune.core.records import RECORD_FIELDS, SOURCE_COLUMNS

COLS = list(SOURCE_COLUMNS)


def row(i: int, **over) -> dict:
    r = {c: f"{c} {i}" for c in COLS}
    r["Job Title"] = f" Job {i}"  # a leading space must survive
    r["Cover Letter"] = f"Dear team,\n\nLetter {i}.\n\nSincerely,\nApplicant {i}"
    r.update(over)
    return r


ROWS = [row(i) for i in range(6)]


def write_csv(path, rows, cols=COLS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    import pandas as pd

    pd.DataFrame(rows, columns=COLS).to_parquet(path)
    return path


def inputs(split):
    return [{k: r[k] for k in RECORD_FIELDS} for r in split.records]


def expected(rows):
    return [{key: r[src] for src, key in SOURCE_COLUMNS.items()} for r in rows]


@pytest.mark.parametrize("ext", ["csv", "jsonl", "json", "parquet"])
def test_folder_of_split_files_each_format(tmp_path, ext):
    writers = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet,
               "json": lambda p, rows: p.write_text(json.dumps(rows), encoding="utf-8")}
    writers[ext](tmp_path / f"train.{ext}", ROWS[:4])
    writers[ext](tmp_path / f"test.{ext}", ROWS[4:])
    splits, note = load(str(tmp_path))
    assert list(splits) == ["train", "test"]
    assert inputs(splits["train"]) == expected(ROWS[:4])
    assert inputs(splits["test"]) == expected(ROWS[4:])
    assert [r["id"] for r in splits["test"].records] == ["test-0", "test-1"]
    assert "train." in note


def test_csv_text_is_kept_byte_for_byte(tmp_path):
    tricky = row(0, **{"Skillsets": "", "Qualifications": "NA", "Applicant Name": "None",
                       "Preferred Qualifications": '  5+ years,\r\n "quoted" ; 007 ',
                       "Past Working Experience": "1e3"})
    table = read_table(write_csv(tmp_path / "a.csv", [tricky]))
    rec = to_records(table, "train")[0]
    assert rec["preferred_qualifications"] == '  5+ years,\r\n "quoted" ; 007 '
    assert rec["qualifications"] == "NA" and rec["applicant_name"] == "None" and rec["past_experience"] == "1e3"
    assert rec["job_title"] == " Job 0"
    assert rec["missing_fields"] == ["skillsets"]


def test_nulls_become_empty_strings(tmp_path):
    rows = [dict(ROWS[0], Skillsets=None, Qualifications=float("nan"))]
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(rows[0]).replace("NaN", "null") + "\n")
    rec = to_records(read_table(path), "train")[0]
    assert rec["skillsets"] == "" and rec["qualifications"] == ""
    assert rec["missing_fields"] == ["skillsets", "qualifications"]
    rec = to_records(read_table(write_parquet(tmp_path / "a.parquet", rows)), "train")[0]
    assert rec["skillsets"] == "" and rec["qualifications"] == ""


def test_record_keys_are_accepted_as_columns(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", expected(ROWS[:3]))
    write_jsonl(tmp_path / "test.jsonl", expected(ROWS[3:]))
    splits, _ = load(str(tmp_path))
    assert inputs(splits["train"]) == expected(ROWS[:3])
    assert path.exists()


def test_validation_file_and_shards(tmp_path):
    (tmp_path / "data").mkdir()
    write_parquet(tmp_path / "data" / "train-00000-of-00002.parquet", ROWS[:2])
    write_parquet(tmp_path / "data" / "train-00001-of-00002.parquet", ROWS[2:4])
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", ROWS[4:5])
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", ROWS[5:])
    splits, _ = load(str(tmp_path))
    assert inputs(splits["train"]) == expected(ROWS[:4])
    assert [r["id"] for r in splits["train"].records] == [f"train-{i}" for i in range(4)]
    assert inputs(splits["validation"]) == expected(ROWS[5:])


def test_single_file_is_split_deterministically(tmp_path):
    rows = [row(i) for i in range(20)]
    path = write_csv(tmp_path / "all.csv", rows)
    a, note = load(str(path), seed=1, test_size=0.25)
    b, _ = load(str(path), seed=1, test_size=0.25)
    c, _ = load(str(path), seed=2, test_size=0.25)
    assert len(a["test"].records) == 5 and len(a["train"].records) == 15
    ids = [r["id"] for r in a["test"].records]
    assert ids == [r["id"] for r in b["test"].records] != [r["id"] for r in c["test"].records]
    assert ids == sorted(ids, key=lambda s: int(s.split("-")[1]))  # file order kept
    assert {r["id"].split("-")[1] for r in a["train"].records}.isdisjoint({i.split("-")[1] for i in ids})
    assert "carved" in note
    assert len(load(str(path), test_size=3)[0]["test"].records) == 3


def test_single_file_split_column(tmp_path):
    rows = [dict(row(i), split="test" if i % 3 == 0 else "train") for i in range(6)]
    splits, _ = load(str(write_csv(tmp_path / "all.csv", rows, COLS + ["split"])))
    assert [r["id"] for r in splits["test"].records] == ["test-0", "test-3"]
    assert [r["id"] for r in splits["train"].records] == ["train-1", "train-2", "train-4", "train-5"]
    bad = [dict(row(0), split="holdout")]
    with pytest.raises(ValueError, match=r"row 1, column 'split': 'holdout'"):
        load(str(write_csv(tmp_path / "bad.csv", bad, COLS + ["split"])))


def test_save_to_disk_folder(tmp_path):
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                               "test": datasets.Dataset.from_list(ROWS[4:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    splits, _ = load(str(tmp_path / "dd"))
    assert inputs(splits["train"]) == expected(ROWS[:4])
    assert inputs(splits["test"]) == expected(ROWS[4:])
    datasets.Dataset.from_list([row(i) for i in range(10)]).save_to_disk(str(tmp_path / "one"))
    splits, _ = load(str(tmp_path / "one"), test_size=0.2)
    assert len(splits["test"].records) == 2 and len(splits["train"].records) == 8


def test_sample_loads():
    splits, _ = load("sample")
    assert set(splits) == {"train", "test"}
    assert len(splits["train"].records) >= 30 and len(splits["test"].records) >= 5


# ---------------------------------------------------------------- errors


def test_missing_path_and_unknown_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load(str(tmp_path / "nope.csv"))
    (tmp_path / "a.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a\.xlsx: unsupported file type '\.xlsx'"):
        load(str(tmp_path / "a.xlsx"))


def test_folder_without_train_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"no train file.*notes\.txt"):
        load(str(tmp_path))


def test_missing_column_lists_what_is_there(tmp_path):
    cols = [c for c in COLS if c != "Skillsets"] + ["skills"]
    rows = [{**{c: "x" for c in cols}} for _ in range(2)]
    path = write_csv(tmp_path / "a.csv", rows, cols)
    with pytest.raises(ValueError) as e:
        to_records(read_table(path), "train")
    msg = str(e.value)
    assert str(path) in msg and "missing column(s) ['Skillsets']" in msg and "'skills'" in msg


def test_near_miss_column_name_is_pointed_out(tmp_path):
    cols = [c.lower() if c == "Cover Letter" else c for c in COLS]
    path = write_csv(tmp_path / "a.csv", [{c: "x" for c in cols}], cols)
    with pytest.raises(ValueError, match="found 'cover letter' for 'Cover Letter'"):
        to_records(read_table(path), "train")


@pytest.mark.parametrize("name,content,match", [
    ("a.csv", b"", "the file is empty"),
    ("a.csv", b"\n \n", "the file is empty"),
    ("a.csv", (",".join(COLS) + "\n").encode(), "no data rows"),
    ("a.jsonl", b"\n\n", "the file is empty"),
    ("a.json", b"[]", "no data rows"),
    ("a.parquet", b"", "the file is empty"),
])
def test_empty_files(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_table(tmp_path / name)


def test_undecodable_bytes_name_offset_and_line(tmp_path):
    path = write_csv(tmp_path / "a.csv", ROWS[:2])
    data = path.read_bytes()
    cut = data.index(b"Letter 1")
    path.write_bytes(data[:cut] + "caf\u00e9 ".encode("cp1252") + data[cut:])
    with pytest.raises(ValueError) as e:
        read_table(path)
    msg = str(e.value)
    line = data[:cut].count(b"\n") + 1
    assert f"byte offset {cut + 3}" in msg and f"line {line}" in msg and "UTF-8" in msg and str(path) in msg


def test_csv_row_with_wrong_field_count(tmp_path):
    path = write_csv(tmp_path / "a.csv", ROWS[:2])
    with open(path, "a", encoding="utf-8") as f:
        f.write("only,three,fields\n")
    with pytest.raises(ValueError, match=r"row 3 \(line \d+\) has 3 fields, the header has 9"):
        read_table(path)


def test_csv_row_with_bad_quoting(tmp_path):
    path = write_csv(tmp_path / "a.csv", ROWS[:1])
    with open(path, "a", encoding="utf-8") as f:
        f.write('a,"b"c,d,e,f,g,h,i,j\n')
    with pytest.raises(ValueError, match=r"row 2 \(line \d+\) does not parse as CSV"):
        read_table(path)
    path.write_text(",".join(COLS) + '\n"unterminated,x\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 1 \(line 2\) does not parse as CSV"):
        read_table(path)


def test_malformed_json_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"Job Title": "x",\n' + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(ValueError, match=r"a\.jsonl: line 2 \(row 2\) is not valid JSON"):
        read_table(path)
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"line 2 \(row 2\) is a JSON list"):
        read_table(path)


def test_malformed_json_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"Job Title": "x"},\n{"Job Title": }\n]')
    with pytest.raises(ValueError, match=r"a\.json: not valid JSON at line 3, column"):
        read_table(path)
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="expected a JSON list of row objects"):
        read_table(path)


def test_non_text_value_names_row_and_column(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], dict(ROWS[1], Skillsets=["Python", "SQL"])])
    with pytest.raises(ValueError, match=r"row 2, column 'Skillsets': expected text, got a list"):
        read_table(path)


def test_damaged_parquet(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a readable parquet file"):
        read_table(tmp_path / "a.parquet")


def test_hub_id_without_network_says_use_a_local_path(monkeypatch):
    import covertune.data.load as load_mod

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(load_mod, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(FileNotFoundError, match=r"hub is not reachable.*--data path/to/folder"):
        load("ShashiVish/cover-letter-dataset")


def test_hub_load_failure_is_explained(monkeypatch):
    import datasets

    import covertune.data.load as load_mod

    monkeypatch.setattr(load_mod, "hub_reachable", lambda timeout=3.0: True)

    def boom(*a, **k):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(FileNotFoundError, match=r"could not load 'someone/data'.*local copy"):
        load("someone/data")


def test_hub_dataset_dict_is_converted(monkeypatch):
    import datasets

    import covertune.data.load as load_mod

    monkeypatch.setattr(load_mod, "hub_reachable", lambda timeout=3.0: True)
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:4]),
                               "test": datasets.Dataset.from_list(ROWS[4:])})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    splits, _ = load("someone/data")
    assert inputs(splits["test"]) == expected(ROWS[4:])
