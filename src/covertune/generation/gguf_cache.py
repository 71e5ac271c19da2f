"""The run's model as a GGUF file for the llama.cpp engine, written once by ``covertune export`` and kept.

The file lives in ``<out>/.engine/gguf/<quant>-<key>/model.gguf`` (without a run directory, in covertune's
cache, ``~/.cache/covertune/gguf/<model and adapter folder>/``), where ``key`` is a hash of what the model is made of: the adapter's
fingerprint (every file of the adapter folder, by content), or a merged folder's identity (config hash,
weight files and sizes), the base model's identity, and the export settings. A changed adapter has another
key, so its GGUF is exported afresh and the stale one removed; an unchanged one is read as it is. An
adapter is merged into its base in fp32 (unless a dtype is named), so the weights are rounded once, into the
GGUF's own types.

``load_letter_model`` is ``covertune.models.letter_model.load_letter_model`` for the llama.cpp engine: the same
sources, tokenizer, prompt format and stop tokens, with the weights in llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

from covertune.models import load as models, recipe
from covertune.core import io, rundir
from covertune.config.options import EMBEDDED_MODEL

log = logging.getLogger(__name__)

ENGINE_DIR = ".engine"
DEFAULT_QUANT = "q8_0"


def cache_root(out, model: str = EMBEDDED_MODEL, source: Path | None = None) -> Path:
    """Where a run's GGUF files are kept: in the run directory, else in covertune's cache, per base model and
    adapter (or merged) folder, so that another folder's export does not replace this one's."""
    if out:
        return Path(out) / ENGINE_DIR / "gguf"
    ref = str(Path(models.resolve_model(model)).resolve())
    if source is not None:
        ref += "\n" + str(Path(source).resolve())
    return models.cache_dir() / "gguf" / hashlib.sha256(ref.encode()).hexdigest()[:12]


def source_key(model: str, adapter: Path | None, merged: Path | None, quant: str, base_weights: str,
               dtype: str) -> str:
    """What the GGUF is built from, hashed: the adapter's fingerprint (its files' contents), or the merged
    folder's identity, with the base model and the export settings."""
    parts = {"quant": quant, "model": rundir.model_identity(models.resolve_model(model))}
    if merged is not None:
        parts["merged"] = rundir.model_identity(str(merged))
    elif adapter is not None:
        parts.update(adapter=rundir.path_hash(adapter), base_weights=base_weights, dtype=dtype)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_gguf(out: str = "", *, model: str = EMBEDDED_MODEL, adapter: str = "", merged: str = "",
             base_weights: str = "auto", quant: str = DEFAULT_QUANT, dtype: str = "auto",
             trust_remote_code: bool = False) -> Path:
    """The GGUF file of the run's model (``out``'s merged folder or adapter, or ``adapter``/``merged``;
    the base ``model`` alone when there is neither), exported now unless an export of the same source and
    settings is there."""
    from covertune.export.gguf_llama import QUANTS
    from covertune.export.kquant import KQUANTS
    from covertune.export.modelfile import MODEL_FILE

    if quant not in (*QUANTS, *KQUANTS):
        raise ValueError(f"quant must be one of {', '.join((*QUANTS, *KQUANTS))}, got {quant!r}")
    adapter_dir = merged_dir = None
    if out or adapter or merged:
        adapter_dir, merged_dir = rundir.fine_tuned_source(out or "", adapter, merged)
    if adapter_dir is None and merged_dir is None:  # the base model alone: its folder is the "merged" model
        merged_dir = Path(models.resolve_model(model))
    dtype = "fp32" if dtype in ("", "auto") else dtype  # merged in fp32, rounded once into the GGUF's types
    key = source_key(model, adapter_dir, merged_dir, quant, base_weights, dtype)
    root = cache_root(out, model, adapter_dir if adapter_dir is not None else merged_dir)
    target = root / f"{quant}-{key}"
    path = target / MODEL_FILE
    if path.is_file():
        return path
    from covertune.config.stages import ExportConfig
    from covertune.export.kquant import check_kquant, write_model_gguf
    from covertune.export.source import resolve_source  # torch and transformers: only to export

    log.info("exporting the model for llama.cpp (%s) into %s", quant, target)
    cfg = ExportConfig(out=str(out or root), format="gguf", quant=quant, export_dir=str(target),
                       merged=str(merged_dir) if merged_dir is not None else "", model=model,
                       adapter=str(adapter_dir) if adapter_dir is not None else "", base_weights=base_weights,
                       dtype=dtype, trust_remote_code=trust_remote_code, force=True)
    check_kquant(quant)
    source = resolve_source(cfg)  # the merged folder, or the adapter merged as `covertune merge` does
    with io.atomic_dir(target) as tmp:
        write_model_gguf(tmp / MODEL_FILE, source, quant, f"covertune-{Path(out or root).resolve().name}")
    for stale in root.glob(f"{quant}-*"):  # the same quant built from an earlier adapter
        if stale != target and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return path


def load_letter_model(cfg, quant: str = DEFAULT_QUANT, threads: int = 0):
    """``covertune.models.letter_model.load_letter_model`` with the weights in llama.cpp: a LetterModel whose model is
    a ``covertune.generation.llamacpp_engine.LlamaCppModel`` (``threads``: 0 = the physical cores). Reads the same
    fields of ``cfg`` (a GenerateConfig)."""
    from covertune.generation.llamacpp_engine import LlamaCppModel
    from covertune.models.letter_model import LetterModel, letter_source, resolve_format

    cfg, out, adapter, merged, train_cfg = letter_source(cfg)  # as the torch loader resolves and checks it
    prompt_format = resolve_format(cfg, train_cfg)
    tokenizer = _tokenizer(cfg, prompt_format)
    path = run_gguf(str(out) if out else "", model=cfg.model, adapter=str(adapter or ""), merged=str(merged or ""),
                    base_weights=cfg.base_weights, quant=quant, dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code)
    model = LlamaCppModel(path, threads=threads, generation_config=_generation_config(merged, cfg.model))
    recipe.add_end_tokens(model, merged or adapter)
    what = f"merged model {merged}" if merged else f"{cfg.model} + adapter {adapter}" if adapter else cfg.model
    return LetterModel(model, tokenizer, prompt_format, f"{what} (llama.cpp, {quant})")


def _tokenizer(cfg, prompt_format: str):
    """The model's tokenizer as ``load_tokenizer`` gives it: read from its tokenizer.json without transformers
    where that gives the same ids (covertune.models.tokenizer_file), else transformers'."""
    from covertune.models import tokenizer_file

    ref = models.resolve_model(cfg.model)
    plain = tokenizer_file.load(ref, prompt_format) if Path(ref).is_dir() and not cfg.trust_remote_code else None
    return plain or models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)


def _generation_config(merged: Path | None, model: str):
    """The generation config a torch model of this source would carry (its EOS ids are stop tokens): the
    folder's generation_config.json's ``eos_token_id`` read as it is, else transformers' GenerationConfig."""
    folder = Path(merged) if merged else Path(models.resolve_model(model))
    path = folder / "generation_config.json"
    if path.is_file():
        try:
            return SimpleNamespace(eos_token_id=json.loads(path.read_text(encoding="utf-8")).get("eos_token_id"))
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass  # transformers' reader names what is wrong with it
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(folder) if folder.is_dir() else str(model))
    except OSError:
        return None


def load_pass_model(cfg, fine_tuned: bool):
    """A pass of ``covertune generate --engine llama.cpp`` (``cfg``: its GenerateConfig): the base model
    alone, or the run's fine-tuned model, as a ``covertune.generation.llamacpp_engine.LlamaCppModel``."""
    from covertune.generation.llamacpp_engine import LlamaCppModel

    merged = None
    if fine_tuned:
        adapter, merged = rundir.fine_tuned_source(cfg.out, cfg.adapter, cfg.merged)
        path = run_gguf(cfg.out, model=cfg.model, adapter=str(adapter or ""), merged=str(merged or ""),
                        base_weights=cfg.base_weights, quant=cfg.gguf_quant, dtype=cfg.dtype,
                        trust_remote_code=cfg.trust_remote_code)
    else:
        path = run_gguf("", model=cfg.model, quant=cfg.gguf_quant, trust_remote_code=cfg.trust_remote_code)
    model = LlamaCppModel(path, generation_config=_generation_config(merged, cfg.model))
    if fine_tuned:
        recipe.add_end_tokens(model, merged or adapter)  # where the adapter's letters end (its recipe)
    return model
