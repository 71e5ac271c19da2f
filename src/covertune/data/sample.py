"""The small sample dataset packaged with covertune (written by the team, 9 original columns):
``sample/train.csv`` (32 rows, some deliberately messy) and ``sample/test.csv`` (8 rows)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dir() -> Path:
    """The folder holding the sample's train.csv and test.csv."""
    return Path(str(resources.files("covertune").joinpath("sample")))


def sample_path() -> Path:
    """The sample's train CSV (the 9 columns of the cover-letter dataset)."""
    return sample_dir() / "train.csv"
