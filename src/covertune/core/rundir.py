"""The run directory's contract: where every stage reads and writes, and what a finished stage recorded.

    <out>/data/{train,validation,test}.jsonl   the data stage's splits (+ report.json, report.md, plots)
    <out>/checkpoints/checkpoint-<step>/       the train stage's checkpoints (resumable)
    <out>/checkpoints/covertune_checkpoints.json   each checkpoint's validation loss and, with
                                               --select-checkpoint rouge_l/task, its validation letters' scores
    <out>/adapter/                             the adapter (the checkpoint --select-checkpoint chose), its
                                               tokenizer, covertune_train.json (the choice: checkpoint_selection)
    <out>/train_log.jsonl, <out>/loss.png      the train stage's log and plot
    <out>/preference/pairs.jsonl, summary.json, train_log.jsonl   the prefer stage's pairs and log
    <out>/preference_adapter/                  the prefer stage's adapter (the SFT adapter trained on the pairs)
    <out>/merged/                              the merge stage's full model (+ covertune_merge.json)
    <out>/eval.csv                             the generate stage's letters (+ generate_stats.json)
    <out>/results_per_example.csv, eval_summary.csv, metrics.json   the evaluate stage's scores
    <out>/report.md, report.html               the report stage's documents
    <out>/.stages/<stage>.json                 a stage's completion marker, written last

Stages meet only here (and in covertune.core.records / covertune.core.prompt): no stage imports another.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from covertune.core import io

log = logging.getLogger(__name__)

DATA_DIR = "data"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
PREFERENCE_DIR = "preference"
PREFERENCE_ADAPTER_DIR = "preference_adapter"
CHECKPOINTS_DIR = "checkpoints"
EVAL_CSV = "eval.csv"
GENERATE_STATS = "generate_stats.json"
RECIPE_FILE = "recipe.json"  # the decoding the fine-tuned letters were written with (covertune.models.recipe)
RESULTS_FILE = "results_per_example.csv"
SUMMARY_FILE = "eval_summary.csv"
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"
LOSS_PLOT = "loss.png"
TRAIN_INFO = "covertune_train.json"  # the train stage's config and results, inside the adapter folder
MERGE_INFO = "covertune_merge.json"  # the merge stage's record, inside the merged folder
STAGES_DIR = ".stages"
ADAPTER_CONFIG = "adapter_config.json"

PathLike = str | os.PathLike


# ---------------------------------------------------------------- paths


def data_dir(out: PathLike) -> Path:
    return Path(out) / DATA_DIR


def split_path(out: PathLike, split: str) -> Path:
    return data_dir(out) / f"{split}.jsonl"


def adapter_dir(out: PathLike) -> Path:
    return Path(out) / ADAPTER_DIR


def preference_dir(out: PathLike) -> Path:
    return Path(out) / PREFERENCE_DIR


def preference_adapter_dir(out: PathLike) -> Path:
    return Path(out) / PREFERENCE_ADAPTER_DIR


def merged_dir(out: PathLike) -> Path:
    return Path(out) / MERGED_DIR


def checkpoints_dir(out: PathLike) -> Path:
    return Path(out) / CHECKPOINTS_DIR


def eval_csv(out: PathLike) -> Path:
    return Path(out) / EVAL_CSV


def recipe_path(folder: PathLike) -> Path:
    """A run's (or a shipped model's) recipe: the decoding its letters were measured with."""
    return Path(folder) / RECIPE_FILE


def train_log(out: PathLike) -> Path:
    return Path(out) / TRAIN_LOG


def loss_plot(out: PathLike) -> Path:
    return Path(out) / LOSS_PLOT


def check_out(out: PathLike) -> Path:
    """The run directory, checked to be usable before a stage spends any time: a folder (or one that
    can be made) that this process may write in. A clear error otherwise."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder: pass a folder for the run directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"--out {out}: {existing} is a file, so the run directory cannot be made "
                                 "there; pass another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out}: {existing} is not writable; pass a folder you can write in")
    return path


def output_path(out: PathLike, name: str, option: str = "output_file") -> Path:
    """Where an output named ``name`` goes: inside the run directory when relative (a name leading out
    of it, like ``../x.csv``, is refused), where it says when absolute."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    inside = (Path(out) / path).resolve()
    if not inside.is_relative_to(Path(out).resolve()):
        raise ValueError(f"{option} {name!r} leads outside the run directory {out}; give a name inside it, "
                         "or an absolute path to write elsewhere on purpose")
    return Path(out) / path


# ---------------------------------------------------------------- reading what stages wrote


def read_split(out: PathLike, split: str) -> list[dict]:
    """A split the data stage wrote; a clear error when it has not run."""
    path = split_path(out, split)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `covertune data --out {out}` first")
    return io.read_jsonl(path)


def has_adapter(folder: PathLike) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).exists()


def find_adapter(out: PathLike, adapter: str = "") -> Path:
    """The adapter folder: ``adapter`` if given, else ``<out>/adapter``; checked to hold an adapter."""
    path = Path(adapter).expanduser() if adapter else adapter_dir(out)
    if not has_adapter(path):
        hint = "" if adapter else "; run `covertune train` first or pass --adapter"
        raise FileNotFoundError(f"no PEFT adapter at {path} ({ADAPTER_CONFIG} missing){hint}")
    return path


def find_merged(merged: str) -> Path:
    """A merged model folder, checked to hold a model."""
    path = Path(merged).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"merged model folder {path} has no config.json; run `covertune merge` first")
    return path


def fine_tuned_source(out: PathLike, adapter: str = "", merged: str = "") -> tuple[Path | None, Path | None]:
    """(adapter, merged): where the fine-tuned model of a run comes from. A merged folder wins when
    given; else the adapter given, or ``<out>/adapter`` when it holds one; (None, None) when the run has
    no fine-tuned model (an ``adapter`` given that holds none is an error)."""
    if merged:
        return None, find_merged(merged)
    if adapter:
        return find_adapter(out, adapter), None
    default = adapter_dir(out)
    return (default, None) if has_adapter(default) else (None, None)


def read_json_file(path: PathLike, remedy: str):
    """A run file's JSON, or {} where the file is absent; a broken one is a one-line error naming the file
    and ``remedy`` (what to do)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); {remedy}") from None


def read_train_config(folder: PathLike) -> dict:
    """The train stage's config saved beside an adapter (or a merged model); {} if there is none."""
    data = read_json_file(Path(folder) / TRAIN_INFO, "train again or delete it")
    return data if isinstance(data, dict) else {}


def check_safetensors(folder: PathLike) -> None:
    """Every ``*.safetensors`` file in ``folder`` is whole (its header parses and its data is all there):
    a one-line error naming the file otherwise, before hours are spent on a model that cannot load."""
    from safetensors import safe_open

    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy") as f:  # the header alone: no torch needed
                f.keys()
        except Exception as e:  # SafetensorError, or an OSError reading it
            raise ValueError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); it may "
                             "be truncated: write it again (train/merge with --force)") from None


def checkpoints(ckpt_dir: PathLike) -> list[Path]:
    """The checkpoint-<step> folders that hold a trainer state, highest step first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True)


def last_checkpoint(ckpt_dir: PathLike) -> Path | None:
    """The checkpoint-<step> folder with the highest step that holds a trainer state."""
    found = checkpoints(ckpt_dir)
    return found[0] if found else None


def checkpoint_problem(path: PathLike) -> str | None:
    """Why a checkpoint cannot be continued from (its trainer state or weights unreadable), or None."""
    path = Path(path)
    try:
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"trainer_state.json unreadable ({e})"
    if not list(path.glob("*.safetensors")) and not list(path.glob("pytorch_model_fsdp*")):
        return "no weights (*.safetensors, or FSDP's pytorch_model_fsdp_* shards)"
    try:
        check_safetensors(path)
    except ValueError as e:
        return str(e)
    for name in ("optimizer.pt", "scheduler.pt"):
        if (path / name).exists() and (path / name).stat().st_size == 0:
            return f"{name} is empty"
    return None


def last_good_checkpoint(ckpt_dir: PathLike) -> Path | None:
    """The highest-step checkpoint that can be continued from; each one skipped is logged with why."""
    for path in checkpoints(ckpt_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("%s cannot be continued from: %s; trying the checkpoint before it", path, problem)
    return None


# ---------------------------------------------------------------- stage markers


def stage_marker(out: PathLike, stage: str) -> Path:
    """``<out>/.stages/<stage>.json``: written last by a stage that finished."""
    return Path(out) / STAGES_DIR / f"{stage}.json"


def mark_done(out: PathLike, stage: str, info: dict | None = None) -> None:
    io.write_json(stage_marker(out, stage), info or {})


def is_done(out: PathLike, stage: str) -> bool:
    return stage_marker(out, stage).exists()


def stage_info(out: PathLike, stage: str) -> dict | None:
    """What a finished stage recorded in its marker; None if the stage has not finished (or its marker
    cannot be read: the stage is then treated as not finished)."""
    marker = stage_marker(out, stage)
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        log.warning("%s cannot be read; the %s stage is treated as not finished", marker, stage)
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- stage fingerprints
#
# A stage records in its marker what it was built from: the settings that change its output and its
# input files' hashes. A later call compares them with its own: equal, the stage is complete and
# skipped; different, it refuses (``StaleStage``: the message names what changed and ``--force``) or,
# for a stage that is cheap to redo, rebuilds. So a run never returns results built from other inputs.


class StaleStage(ValueError):
    """A finished stage's outputs were built from other settings or inputs than the ones given now."""


def file_hash(path: PathLike) -> str:
    """sha256 of a file's contents (the first 16 hex digits)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def path_hash(path: PathLike) -> str | None:
    """A file's hash, or a folder's (its files' relative paths and hashes); None when it does not exist."""
    import hashlib

    path = Path(path)
    if path.is_file():
        return file_hash(path)
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h.update(f"{p.relative_to(path).as_posix()}\0{file_hash(p)}\n".encode())
    return h.hexdigest()[:16]


def model_identity(ref: str) -> str:
    """What a model reference stands for: a local folder by its config and weight files (names, sizes
    and the config's hash: weights are too large to hash on every call), a hub id by its name."""
    path = Path(ref).expanduser()
    if not path.is_dir():
        return ref
    parts = [f"config.json={path_hash(path / 'config.json')}"]
    parts += [f"{p.name}:{p.stat().st_size}" for p in sorted(path.glob("*.safetensors"))]
    return f"{path.resolve()} ({', '.join(parts)})"


def fingerprint(settings: dict, inputs: dict[str, str | None]) -> dict:
    """A stage's fingerprint: ``settings`` (option -> value, as JSON) and ``inputs`` (name -> hash)."""
    return json.loads(json.dumps({"settings": settings, "inputs": inputs}, default=str))


def fingerprint_changes(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """What differs between two fingerprints, one phrase per item ("learning_rate 0.0004 -> 0.001",
    "data/train.jsonl changed"); settings in ``ignore`` are not compared."""
    changes = []
    old_s, new_s = old.get("settings", {}), new.get("settings", {})
    for key in sorted(set(old_s) | set(new_s)):
        if key not in ignore and old_s.get(key) != new_s.get(key):
            changes.append(f"{key} {_short(old_s.get(key))} -> {_short(new_s.get(key))}")
    old_i, new_i = old.get("inputs", {}), new.get("inputs", {})
    for key in sorted(set(old_i) | set(new_i)):
        if old_i.get(key) != new_i.get(key):
            changes.append(f"{key} changed")
    return changes


def _short(value) -> str:
    """A value as JSON, long ones cut in the middle (a path's end is what tells two apart)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:30] + "..." + text[-47:]


def check_stage(out: PathLike, stage: str, fp: dict, outputs_exist: bool, force: bool,
                what: str) -> bool:
    """Whether ``stage`` is complete for fingerprint ``fp`` (skip it). False when it has not finished,
    its outputs are missing, or ``force``; a ``StaleStage`` when it finished from other settings or
    inputs. ``what`` names the outputs in the message ("runs/x/adapter")."""
    if force or not outputs_exist:
        return False
    info = stage_info(out, stage)
    if info is None:
        return False
    recorded = info.get("fingerprint")
    if recorded is None:  # written before stages recorded fingerprints: nothing to compare
        log.warning("%s: %s does not record what it was built from; reusing it (--force rebuilds it)",
                    stage, what)
        return True
    changes = fingerprint_changes(recorded, fp)
    if changes:
        raise StaleStage(f"{what} was built from other settings or inputs ({'; '.join(changes)}); "
                         f"pass --force to rebuild it, or choose another --out")
    return True
