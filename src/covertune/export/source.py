"""The model an export writes: the merge stage's folder, or the adapter merged into its base in memory.

Either way the export sees one ``ModelSource``: the config, the tokenizer, the training settings, and the
weights by name, each loaded only when asked for (from the safetensors files of a folder, tensor by
tensor, so a 7B model is never held twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from covertune.config.stages import ExportConfig, MergeConfig
from covertune.core import rundir
from covertune.models import merge as merge_stage
from covertune.models import load as models

log = logging.getLogger(__name__)


@dataclass
class ModelSource:
    """A merged model ready to export."""

    config: object  # transformers PretrainedConfig
    tokenizer: object  # the tokenizer training and generation used
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape, in the checkpoint's order
    load: Callable[[str], torch.Tensor]  # tensor name -> the tensor
    train_cfg: dict  # the train stage's settings (covertune_train.json), {} if unknown
    origin: dict  # what it was built from: {"merged": folder} or the merge info
    generation_config: object | None = None
    model: object | None = field(default=None, repr=False)  # the in-memory model, when merged on the fly
    folder: Path | None = None  # the merged folder, when read from one


def merged_folder(cfg: ExportConfig) -> Path | None:
    """The merged model folder to export: ``--merged``, else ``<out>/merged`` if it holds a model."""
    if cfg.merged:
        folder = Path(cfg.merged).expanduser()
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"merged model folder {folder} has no config.json; "
                                    "run `covertune merge` first or leave --merged out to merge on the fly")
        return folder
    folder = Path(cfg.out) / "merged"
    return folder if (folder / "config.json").exists() else None


def adapter_folder(cfg: ExportConfig) -> Path:
    """The adapter merged on the fly; a clear error when the run has neither a merged model nor an adapter."""
    path = Path(cfg.adapter).expanduser() if cfg.adapter else Path(cfg.out) / "adapter"
    if not (path / "adapter_config.json").exists():
        where = f"{path}" if cfg.adapter else f"{Path(cfg.out)} (no merged/ or adapter/ folder)"
        raise FileNotFoundError(f"nothing to export in {where}: run `covertune train --out {cfg.out}` "
                                "(and optionally `covertune merge`) first, or pass --merged or --adapter")
    return path


def _safetensors_index(folder: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights; export reads safetensors only")
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                where[name] = f
    return where


def from_folder(folder: Path, trust_remote_code: bool = False) -> ModelSource:
    from safetensors import safe_open
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    tokenizer = models.load_tokenizer(str(folder), trust_remote_code=trust_remote_code)
    where = _safetensors_index(folder)
    shapes = {}
    for name, f in where.items():
        with safe_open(str(f), framework="pt") as st:
            shapes[name] = tuple(st.get_slice(name).get_shape())

    def load(name: str) -> torch.Tensor:
        with safe_open(str(where[name]), framework="pt") as st:
            return st.get_tensor(name)

    try:
        gen = GenerationConfig.from_pretrained(str(folder))
    except OSError:
        gen = None
    return ModelSource(config=config, tokenizer=tokenizer, shapes=shapes, load=load,
                       train_cfg=rundir.read_train_config(folder),
                       origin={"merged": str(folder.resolve())}, generation_config=gen, folder=folder)


def merged_on_the_fly(cfg: ExportConfig) -> ModelSource:
    """The adapter merged into its base exactly as ``covertune merge`` does, kept in memory."""
    adapter = adapter_folder(cfg)
    mcfg = MergeConfig(model=cfg.model, out=cfg.out, adapter=str(adapter), dtype=cfg.dtype,
                       base_weights=cfg.base_weights, trust_remote_code=cfg.trust_remote_code)
    train_cfg = rundir.read_train_config(adapter)
    log.info("no merged model in %s: merging the adapter %s on the fly", cfg.out, adapter)
    model, tokenizer, info = merge_stage.merged_model(mcfg, adapter, train_cfg)
    state = model.state_dict()
    return ModelSource(config=model.config, tokenizer=tokenizer,
                       shapes={k: tuple(v.shape) for k, v in state.items()}, load=state.__getitem__,
                       train_cfg=train_cfg, origin=info, generation_config=model.generation_config, model=model)


def resolve_source(cfg: ExportConfig) -> ModelSource:
    folder = merged_folder(cfg)
    if folder is not None:
        log.info("exporting the merged model %s", folder)
        return from_folder(folder, cfg.trust_remote_code)
    return merged_on_the_fly(cfg)
