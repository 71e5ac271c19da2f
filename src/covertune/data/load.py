"""Loading a cover-letter dataset into records, with clear errors for bad input.

Accepted sources (``load(spec)``):

- ``sample``: the small dataset packaged with covertune (``covertune/sample/train.csv``, ``test.csv``);
- a folder holding split files: ``train.*`` and ``test.*`` (optionally ``validation.*``, ``valid.*``
  or ``val.*``) in CSV, JSONL, JSON or parquet; shards such as ``train-00000-of-00002.parquet``
  (also under ``data/``) are read in name order and concatenated;
- a ``datasets.save_to_disk`` folder (a DatasetDict with train/test, or a single Dataset);
- a single CSV/JSONL/JSON/parquet file: a ``split`` column (train/test/validation), if there is
  one, assigns the rows; otherwise a test split is carved out deterministically (``test_size``,
  ``seed``), keeping file order within each split;
- a Hugging Face hub dataset id (default ``ShashiVish/cover-letter-dataset``), when the hub is
  reachable (or cached, with ``HF_HUB_OFFLINE=1``).

A source without a test split (a folder or DatasetDict with train only) gets one carved the same way
as a single file. Fields are read as text exactly as stored: CSV cells are never type-converted,
nulls/NaN become "" and nothing is stripped. Columns are the dataset's 9 original names
(``records.SOURCE_COLUMNS``) or the record keys (so the data stage's own JSONL files load too);
other columns are ignored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from covertune.core.records import ID_FIELD, INPUT_FIELDS, MISSING_FIELD, RECORD_FIELDS, SOURCE_COLUMNS
from covertune.data.sample import sample_dir

log = logging.getLogger(__name__)

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
SPLIT_ALIASES = {"train": ("train",), "test": ("test",), "validation": ("validation", "valid", "val")}
SPLIT_COLUMN = "split"


@dataclass
class Split:
    """One split as loaded: records in source order, and where they came from."""

    name: str
    origin: str  # file path(s) or hub id, for messages and the report
    records: list[dict] = field(default_factory=list)


@dataclass
class Table:
    """Rows of one source (a file or a hub split) keyed by its column names, values as text."""

    origin: str
    columns: list[str]
    rows: list[dict]


# ---------------------------------------------------------------- entry point


def load(spec: str, *, seed: int = 42, test_size: float = 0.3) -> tuple[dict[str, Split], str]:
    """Load ``spec`` into splits (train, test, maybe validation) and say how (a short note)."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("no dataset given: pass --data (a file, a folder, a hub id or 'sample')")
    if spec == "sample":
        return _load_folder(sample_dir(), seed, test_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return _load_from_disk(path, seed, test_size)
        return _load_folder(path, seed, test_size)
    if path.is_file():
        table = read_table(path)
        return _split_single(table, seed, test_size)
    if _looks_like_hub_id(spec):
        return _load_hub(spec, seed, test_size)
    raise FileNotFoundError(f"{spec}: no such file or folder (and not a Hugging Face dataset id)")


# ---------------------------------------------------------------- reading one file


def read_table(path: str | os.PathLike) -> Table:
    """Read a CSV, JSONL, JSON or parquet file into a Table of text values."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: unsupported file type {ext or '(none)'!r}; use one of {', '.join(FORMATS)}")
    if ext == ".parquet":
        return _read_parquet(path)
    text = _read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".json": _read_json}[ext]
    table = reader(path, text)
    if not table.rows:
        raise ValueError(f"{path}: the file has no data rows")
    return table


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        bad = data[e.start: e.start + 4]
        raise ValueError(
            f"{path}: not valid UTF-8 at byte offset {e.start} (line {line}, bytes {bad!r}); "
            "re-save the file as UTF-8 (e.g. in a spreadsheet: 'CSV UTF-8', or "
            "`iconv -f cp1252 -t utf-8`)") from None


def _read_csv(path: Path, text: str) -> Table:
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[dict] = []
    start = 1
    try:
        for record in reader:
            if header is None:
                header = record
                _check_header(path, header)
                start = reader.line_num + 1
                continue
            if not record:  # a blank line between rows
                start = reader.line_num + 1
                continue
            if len(record) != len(header):
                raise ValueError(
                    f"{path}: row {len(rows) + 1} (line {start}) has {len(record)} fields, the header has "
                    f"{len(header)}; a field holding commas, quotes or line breaks must be in double "
                    'quotes, with its own quotes doubled ("")')
            rows.append(dict(zip(header, record)))
            start = reader.line_num + 1
    except csv.Error as e:
        raise ValueError(f"{path}: row {len(rows) + 1} (line {start}) does not parse as CSV ({e}); "
                         "check its quoting") from None
    if header is None:
        raise ValueError(f"{path}: the file is empty")
    return Table(str(path), header, rows)


def _check_header(path: Path, header: list[str]) -> None:
    dups = sorted({c for c in header if header.count(c) > 1})
    if dups:
        raise ValueError(f"{path}: duplicate column name(s) {dups} in the header")


def _read_jsonl(path: Path, text: str) -> Table:
    rows, columns = [], {}
    for n, line in enumerate(text.split("\n"), 1):  # JSON escapes line breaks inside strings
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {n} (row {len(rows) + 1}) is not valid JSON "
                             f"({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {n} (row {len(rows) + 1}) is a JSON {type(obj).__name__}, "
                             "expected an object of column: value")
        columns.update(dict.fromkeys(obj))
        rows.append(obj)
    return _table(path, list(columns), rows)


def _read_json(path: Path, text: str) -> Table:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (one object per line? name the file .jsonl)" if "Extra data" in e.msg else ""
        raise ValueError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}){hint}") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        lengths = {len(v) for v in obj.values()}
        if len(lengths) != 1:
            raise ValueError(f"{path}: a JSON object of columns needs lists of equal length, got {sorted(lengths)}")
        obj = [dict(zip(obj, values)) for values in zip(*obj.values())]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of row objects (or an object of column lists), "
                         f"got a JSON {type(obj).__name__}")
    columns: dict = {}
    for n, row in enumerate(obj, 1):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: row {n} is a JSON {type(row).__name__}, expected an object")
        columns.update(dict.fromkeys(row))
    return _table(path, list(columns), obj)


def _read_parquet(path: Path) -> Table:
    import pandas as pd

    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    table = _table(path, [str(c) for c in frame.columns], frame.to_dict("records"))
    if not table.rows:
        raise ValueError(f"{path}: the file has no data rows")
    return table


def _table(path, columns: list[str], rows: list[dict]) -> Table:
    """A Table with every value as text: null/NaN -> "", numbers -> str; lists/objects are errors."""
    out = []
    for n, row in enumerate(rows, 1):
        clean = {}
        for col in columns:
            clean[col] = _text(row.get(col), path, n, col)
        out.append(clean)
    return Table(str(path), columns, out)


def _text(value, origin, row: int, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (bool, int, float)):
        return str(value)
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return _text(value.item(), origin, row, column)
    raise ValueError(f"{origin}: row {row}, column {column!r}: expected text, got a "
                     f"{type(value).__name__} ({str(value)[:60]})")


# ---------------------------------------------------------------- rows -> records


def to_records(table: Table, split: str, indices: list[int] | None = None) -> list[dict]:
    """Validate a table's columns and turn rows into records with ids and missing_fields.

    ``indices`` are the rows' positions in the source (default 0..n-1); ids are ``<split>-<index>``."""
    mapping = column_mapping(table)
    records = []
    for i, row in enumerate(table.rows):
        rec = {ID_FIELD: f"{split}-{indices[i] if indices is not None else i}"}
        for col, key in mapping.items():
            rec[key] = row[col]
        rec[MISSING_FIELD] = [k for k in INPUT_FIELDS if not rec[k].strip()]
        records.append(rec)
    return records


def column_mapping(table: Table) -> dict[str, str]:
    """Source column -> record key: the 9 original names, else the 9 record keys."""
    cols = set(table.columns)
    if set(SOURCE_COLUMNS) <= cols:
        return dict(SOURCE_COLUMNS)
    if set(RECORD_FIELDS) <= cols:
        return {k: k for k in RECORD_FIELDS}
    missing = [c for c in SOURCE_COLUMNS if c not in cols]
    near = {c: t for c in missing for t in table.columns if _norm(c) == _norm(t)}
    hint = ""
    if near:
        hint = "; names must match exactly: " + ", ".join(f"found {t!r} for {c!r}" for c, t in near.items())
    raise ValueError(
        f"{table.origin}: missing column(s) {missing}{hint}. Columns found: {table.columns}. "
        f"Expected the 9 columns {list(SOURCE_COLUMNS)}")


def _norm(name: str) -> str:
    return re.sub(r"[\W_]+", "", name).lower()


# ---------------------------------------------------------------- sources


def _split_single(table: Table, seed: int, test_size: float, origin: str | None = None
                  ) -> tuple[dict[str, Split], str]:
    """One table -> train/test (and validation): by its 'split' column, else a seeded test carve."""
    origin = origin or table.origin
    if SPLIT_COLUMN in table.columns:
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(table.rows):
            name = _canonical_split(row[SPLIT_COLUMN].strip().lower())
            if name is None:
                raise ValueError(f"{origin}: row {i + 1}, column {SPLIT_COLUMN!r}: {row[SPLIT_COLUMN]!r} is "
                                 "not a split name (train, test, validation)")
            groups.setdefault(name, []).append(i)
        if "train" not in groups:
            raise ValueError(f"{origin}: column {SPLIT_COLUMN!r} names no train rows")
        splits = {name: _subset(table, idx, name, origin) for name, idx in groups.items()}
        if "test" not in splits:
            return _carve_test(splits, seed, test_size, origin)
        return splits, f"{origin}: splits from its {SPLIT_COLUMN!r} column"
    splits = {"train": Split("train", origin, to_records(table, "train"))}
    return _carve_test(splits, seed, test_size, origin)


def _carve_test(splits: dict[str, Split], seed: int, test_size: float, origin: str
                ) -> tuple[dict[str, Split], str]:
    """Move a seeded sample of train rows to a new test split; both keep source order."""
    train = splits["train"].records
    n = len(train)
    k = int(test_size) if test_size >= 1 else round(test_size * n)
    if test_size <= 0 or k < 1 or k >= n:
        raise ValueError(f"{origin}: has no test split, and test_size={test_size} of {n} rows leaves "
                         "no test or no train rows; set --test-size (a fraction < 1 or a row count < "
                         f"{n}), or give a folder with train.* and test.* files")
    chosen = set(random.Random(seed).sample(range(n), k))
    test = []
    for i, rec in enumerate(train):
        if i in chosen:
            rec = dict(rec, **{ID_FIELD: "test-" + rec[ID_FIELD].split("-", 1)[1]})
            test.append(rec)
    splits["train"] = Split("train", origin, [r for i, r in enumerate(train) if i not in chosen])
    splits["test"] = Split("test", f"{origin} (carved)", test)
    note = (f"{origin}: no test split; carved {k} of {n} rows as test (test_size={test_size}, "
            f"seed={seed}), file order kept")
    log.warning(note)
    return splits, note


def _subset(table: Table, idx: list[int], name: str, origin: str) -> Split:
    sub = Table(table.origin, table.columns, [table.rows[i] for i in idx])
    return Split(name, origin, to_records(sub, name, idx))


def _canonical_split(name: str) -> str | None:
    for canon, aliases in SPLIT_ALIASES.items():
        if name in aliases:
            return canon
    return None


def _split_files(folder: Path) -> dict[str, list[Path]]:
    """split -> files in the folder (or its data/ subfolder) named <split>.<ext> or <split>-*.<ext>."""
    found: dict[str, list[Path]] = {}
    for base in (folder, folder / "data"):
        if not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if not p.is_file() or p.suffix.lower() not in FORMATS:
                continue
            stem = p.name[: -len(p.suffix)].lower()
            for canon, aliases in SPLIT_ALIASES.items():
                if any(stem == a or stem.startswith(a + "-") for a in aliases):
                    found.setdefault(canon, []).append(p)
    for name, files in found.items():
        if len({f.suffix.lower() for f in files}) > 1 or len({f.parent for f in files}) > 1:
            raise ValueError(f"{folder}: several {name} files {[str(f) for f in files]}; keep one format")
    return found


def _load_folder(folder: Path, seed: int, test_size: float) -> tuple[dict[str, Split], str]:
    files = _split_files(folder)
    if "train" not in files:
        present = sorted(p.name for p in folder.iterdir())[:20]
        raise FileNotFoundError(
            f"{folder}: no train file; expected train.* and test.* ({', '.join(FORMATS)}) or a "
            f"datasets.save_to_disk folder. Found: {present or 'nothing'}")
    splits = {}
    for name in [s for s in SPLIT_ALIASES if s in files]:  # train, test, validation
        paths = files[name]
        tables = [read_table(p) for p in paths]
        table = tables[0] if len(tables) == 1 else _concat(tables)
        splits[name] = Split(name, table.origin, to_records(table, name))
    note = f"{folder}: " + ", ".join(f"{s} from {', '.join(p.name for p in files[s])}" for s in splits)
    if "test" not in splits:
        splits, carve = _carve_test(splits, seed, test_size, splits["train"].origin)
        note += "; " + carve
    return splits, note


def _concat(tables: list[Table]) -> Table:
    mappings = [column_mapping(t) for t in tables]  # validates each shard
    rows = [{key: row[col] for col, key in m.items()} for t, m in zip(tables, mappings) for row in t.rows]
    return Table(" + ".join(t.origin for t in tables), list(RECORD_FIELDS), rows)


def _dataset_table(ds, origin: str) -> Table:
    return _table(origin, list(ds.column_names), ds.to_list())


def _from_dataset_dict(dd, origin: str, seed: int, test_size: float) -> tuple[dict[str, Split], str]:
    splits = {}
    for key in dd:
        name = _canonical_split(key.lower())
        if name is None:
            log.warning("%s: ignoring split %r (not train/test/validation)", origin, key)
            continue
        table = _dataset_table(dd[key], f"{origin}[{key}]")
        if not table.rows:
            raise ValueError(f"{origin}: split {key!r} has no rows")
        splits[name] = Split(name, table.origin, to_records(table, name))
    if "train" not in splits:
        raise ValueError(f"{origin}: no train split; splits found: {list(dd)}")
    note = f"{origin}: splits {', '.join(splits)}"
    if "test" not in splits:
        splits, carve = _carve_test(splits, seed, test_size, origin)
        note += "; " + carve
    return splits, note


def _load_from_disk(path: Path, seed: int, test_size: float) -> tuple[dict[str, Split], str]:
    import datasets

    try:
        obj = datasets.load_from_disk(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable datasets.save_to_disk folder ({type(e).__name__}: {e})") from None
    if isinstance(obj, datasets.DatasetDict):
        return _from_dataset_dict(obj, str(path), seed, test_size)
    table = _dataset_table(obj, str(path))
    if not table.rows:
        raise ValueError(f"{path}: the dataset has no rows")
    return _split_single(table, seed, test_size)


# ---------------------------------------------------------------- the Hugging Face hub


def _looks_like_hub_id(spec: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec)) and Path(spec).suffix.lower() not in FORMATS


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection (a quick check before slow retries)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_hub(spec: str, seed: int, test_size: float) -> tuple[dict[str, Split], str]:
    advice = ("download it where the hub is reachable and pass the local copy, e.g. "
              "--data path/to/folder (with train.csv and test.csv), or --data sample for the packaged sample")
    if not _offline() and not hub_reachable():
        raise FileNotFoundError(
            f"{spec!r} is not a local file or folder, and the Hugging Face hub is not reachable to download "
            f"it; {advice}. (With a cached copy, set HF_HUB_OFFLINE=1.)")
    import datasets

    log.info("loading %s from the Hugging Face hub", spec)
    try:
        dd = datasets.load_dataset(spec)
    except Exception as e:
        raise FileNotFoundError(f"could not load {spec!r} from the Hugging Face hub "
                                f"({type(e).__name__}: {str(e)[:300]}); {advice}") from None
    if isinstance(dd, datasets.Dataset):
        return _split_single(_dataset_table(dd, spec), seed, test_size)
    return _from_dataset_dict(dd, spec, seed, test_size)
