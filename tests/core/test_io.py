"""io: atomic writes leave either the old file/folder or the new one, never a half-written one, and
nothing of their own behind."""

from __future__ import annotations

import pytest

from covertune.core import io


class Boom(Exception):
    pass


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with io.atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new")
        assert target.read_text() == "old"  # not replaced before the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise Boom
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temporary file left


def test_atomic_path_failure_without_an_old_file_leaves_nothing(tmp_path):
    with pytest.raises(Boom):
        with io.atomic_path(tmp_path / "sub" / "new.json") as tmp:
            tmp.write_text("{")
            raise Boom
    assert list((tmp_path / "sub").iterdir()) == []


def test_atomic_dir_replaces_the_folder_whole(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with io.atomic_dir(target) as tmp:
        (tmp / "new.bin").write_text("new")
        assert (target / "old.bin").exists()
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_atomic_dir_keeps_the_old_folder_when_the_write_fails(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(Boom):
        with io.atomic_dir(target) as tmp:
            (tmp / "half.bin").write_text("half")
            (tmp / "sub").mkdir()
            raise Boom
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert (target / "old.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary folder left


def test_written_files_have_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    io.write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_read_jsonl_reads_plain_and_gzipped_files(tmp_path):
    import gzip

    rows = [{"index": 0, "letter": "Dear team,"}, {"index": 1, "letter": "ü"}]
    io.write_jsonl(tmp_path / "a.jsonl", rows)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((tmp_path / "a.jsonl").read_text(encoding="utf-8") + "\n")
    assert io.read_jsonl(tmp_path / "a.jsonl") == io.read_jsonl(tmp_path / "a.jsonl.gz") == rows
    with gzip.open(tmp_path / "bad.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"index": 0}\n{"index": \n')
    with pytest.raises(ValueError, match="bad.jsonl.gz: line 2"):
        io.read_jsonl(tmp_path / "bad.jsonl.gz")
