"""The fine-tuned models that ship inside the package: ``covertune/shipped/<name>/``.

A shipped model is a LoRA adapter folder for a base model (``adapter_model.safetensors``,
``adapter_config.json``), its model card (``README.md``), the decoding it was measured with
(``recipe.json``, read by covertune.models.recipe) and ``manifest.json``, the sha256 of each of its files.
``covertune write`` and ``covertune serve`` use ``DEFAULT_MODEL`` when no model is named;
``covertune models`` lists what ships (``describe``). Every lookup goes through ``shipped_root`` (tests
point it elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "smol"
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MANIFEST = "manifest.json"
CARD = "README.md"


def shipped_root() -> Path:
    """The folder holding the shipped models (inside the installed package)."""
    return Path(str(resources.files("covertune").joinpath("shipped")))  # package data, not a Python package


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of the shipped model ``name`` (it may be absent from a build without it)."""
    return shipped_root() / name


def is_model(folder: Path) -> bool:
    return all((folder / f).is_file() for f in ADAPTER_FILES)


def shipped_models() -> list[str]:
    root = shipped_root()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_model(p)) if root.is_dir() else []


def default_model_dir() -> Path | None:
    """The default shipped model's folder, or None where this install has none."""
    folder = shipped_model_dir(DEFAULT_MODEL)
    return folder if is_model(folder) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, str]:
    """File name -> sha256 from the folder's manifest.json ({"files": {...}} or a flat mapping)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: the shipped model has no manifest") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    files = data.get("files", data) if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise ValueError(f"{path}: expected a mapping of file name to sha256")
    out = {}
    for name, value in files.items():
        digest = value.get("sha256") if isinstance(value, dict) else value
        if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest):
            out[name] = digest
    return out


def verify(folder: Path) -> list[str]:
    """What does not match the manifest (a missing file, a changed hash, an adapter file it omits); []
    when every file is as shipped."""
    listed = manifest(folder)
    problems = [f"{f}: not in {MANIFEST}" for f in ADAPTER_FILES if f not in listed]
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif _sha256(path) != digest:
            problems.append(f"{name}: sha256 differs from {MANIFEST}")
    return problems
