"""`covertune export`: the fine-tuned model for the runtimes people already use.

- ``--format gguf``: ``<out>/export/gguf-<quant>/`` holds ``model.gguf`` (llama.cpp, Ollama, LM Studio),
  an Ollama ``Modelfile``, ``example_prompt.txt`` (a prompt in covertune's schema) and a model card.
- ``--format gguf-lora``: ``<out>/export/gguf-lora/`` holds ``adapter.gguf``, the adapter alone as a GGUF
  LoRA (llama.cpp's ``--lora``, Ollama's ``ADAPTER``), and a Modelfile whose FROM is the base model.
- ``--format safetensors``: ``<out>/export/safetensors/`` holds the merged model (safetensors,
  tokenizer, the training settings) with a model card, for pushing to a hub.

The model is the merge stage's output, or the adapter merged into its base on the fly as ``covertune
merge`` does. The output folder is written beside its place and renamed into it whole, so a failed
export leaves nothing half-written; a folder recorded as complete for the same model and settings is
not written again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from covertune.config.options import PromptFormat, choices
from covertune.config.stages import ExportConfig
from covertune.core import io, rundir
from covertune.core.prompt import render_prompt
from covertune.core.records import from_source_row
from covertune.data.sample import sample_dir
from covertune.export.gguf_llama import QUANTS, check_architecture, write_gguf
from covertune.export.kquant import KQUANTS, check_kquant, write_model_gguf
from covertune.export.lora_gguf import write_lora_gguf
from covertune.export.modelfile import MODEL_FILE, render_modelfile
from covertune.export.source import ModelSource, adapter_folder, merged_folder, resolve_source
from covertune.models import load as models, recipe
from covertune.models.card import export_card
from covertune.models.merge import save_merged

log = logging.getLogger(__name__)

FORMATS = ("gguf", "gguf-lora", "safetensors")
LORA_FILE = "adapter.gguf"
EXPORT_INFO = "covertune_export.json"
EXAMPLE_FILE = "example_prompt.txt"


def export_dir(cfg: ExportConfig) -> Path:
    if cfg.export_dir:
        return Path(cfg.export_dir).expanduser()
    sub = f"gguf-{cfg.quant}" if cfg.format == "gguf" else cfg.format
    return Path(cfg.out) / "export" / sub


def _validate(cfg: ExportConfig) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be gguf, gguf-lora or safetensors, got {cfg.format!r}")
    if cfg.format == "gguf" and cfg.quant not in (*QUANTS, *KQUANTS):
        raise ValueError(f"quant must be one of {', '.join((*QUANTS, *KQUANTS))}, got {cfg.quant!r}")
    if cfg.format == "gguf":
        check_kquant(cfg.quant)
    if cfg.prompt_format not in ("auto", *choices(PromptFormat)):
        raise ValueError(f"prompt_format must be auto, raw or chat, got {cfg.prompt_format!r}")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {cfg.max_new_tokens}")


def check_writable(target: Path) -> None:
    """A clear error now, before any model is loaded, when ``target`` cannot be written."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.probe-", dir=target.parent))
    except OSError as e:
        raise RuntimeError(f"cannot write the export to {target}: {e.strerror or e} "
                           f"({e.filename or target.parent}); pass --export-dir with a writable folder") from None


def _source_config(cfg: ExportConfig):
    """The model config of what will be exported, read without loading weights."""
    from transformers import AutoConfig

    if cfg.format == "gguf-lora":
        where = models.resolve_model(lora_base(cfg))
        return AutoConfig.from_pretrained(where, trust_remote_code=cfg.trust_remote_code), where
    folder = merged_folder(cfg)
    where = str(folder) if folder is not None else models.resolve_model(cfg.model)
    if folder is None:
        adapter_folder(cfg)  # fails clearly when there is nothing to export
    return AutoConfig.from_pretrained(where, trust_remote_code=cfg.trust_remote_code), where


def _identity(cfg: ExportConfig) -> dict:
    """What the export is built from: the source folder's files (names, sizes, times) and the settings."""
    folder = merged_folder(cfg) if cfg.format != "gguf-lora" else None
    src = folder if folder is not None else adapter_folder(cfg)
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(src.iterdir()) if p.is_file()}
    settings = {k: getattr(cfg, k) for k in ("format", "quant", "prompt_format", "max_new_tokens", "name")}
    if folder is None:
        settings.update(model=cfg.model, base_weights=cfg.base_weights, dtype=cfg.dtype)
    return {"source": str(src.resolve()), "files": files, "settings": settings}


def _prompt_format(cfg: ExportConfig, train_cfg: dict) -> str:
    trained = train_cfg.get("prompt_format")
    if cfg.prompt_format == "auto":
        return trained if trained in choices(PromptFormat) else "raw"
    if trained and trained != cfg.prompt_format:
        log.warning("the model was trained with prompt_format %r but the Modelfile is asked to build %r",
                    trained, cfg.prompt_format)
    return cfg.prompt_format


def example_record(out: Path) -> dict:
    """A record to render the example prompt from: the run's first test row, else the packaged sample's."""
    test = out / "data" / "test.jsonl"
    if test.exists():
        rows = io.read_jsonl(test)
        if rows:
            return rows[0]
    import pandas as pd

    frame = pd.read_csv(sample_dir() / "test.csv", keep_default_na=False, dtype=str)
    return from_source_row(frame.iloc[0].to_dict())


def lora_base(cfg: ExportConfig) -> str:
    """The base model a GGUF LoRA applies to: the one the adapter was trained on, else ``--model``."""
    return str(rundir.read_train_config(adapter_folder(cfg)).get("model") or cfg.model)


def _lora_from(base: str) -> str:
    """The Modelfile's FROM for a LoRA's base: the embedded model's own GGUF, a local folder's path, or the name."""
    from covertune.config.options import EMBEDDED_MODEL

    if base in ("", EMBEDDED_MODEL):
        return str(models.embedded_gguf_path())
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def _write_lora_folder(tmp: Path, cfg: ExportConfig, config, name: str) -> dict:
    adapter = adapter_folder(cfg)
    train_cfg = rundir.read_train_config(adapter)
    base = lora_base(cfg)
    written = write_lora_gguf(tmp / LORA_FILE, adapter, config, name)
    tokenizer = models.load_tokenizer(models.resolve_model(base), trust_remote_code=cfg.trust_remote_code)
    prompt_format = _prompt_format(cfg, train_cfg)
    prompt = render_prompt(example_record(Path(cfg.out)))
    io.write_text(tmp / EXAMPLE_FILE, prompt + "\n")
    tag = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "covertune"
    context = getattr(config, "max_position_embeddings", 4096)
    from transformers import GenerationConfig

    ends = GenerationConfig(eos_token_id=recipe.end_token_ids(adapter) or None)  # the recipe's end token, if any
    io.write_text(tmp / "Modelfile", render_modelfile(
        tokenizer, prompt_format, prompt, context_length=context, num_predict=cfg.max_new_tokens,
        generation_config=ends, example_file=EXAMPLE_FILE, name=tag, base=_lora_from(base), adapter=LORA_FILE))
    usage = (f"```bash\nollama create {tag} -f Modelfile\nollama run {tag} \"$(cat {EXAMPLE_FILE})\"\n"
             f"llama-cli -m BASE.gguf --lora {LORA_FILE} -no-cnv -p \"$(cat {EXAMPLE_FILE})\"$'\\n' --temp 0 "
             f"--repeat-penalty 1 -n {cfg.max_new_tokens}\n```\nBASE.gguf is `{base}` as a GGUF (the Modelfile's "
             "FROM); the adapter applies to the base's unquantized weights as trained.")
    files = (f"- `{LORA_FILE}`: GGUF LoRA (rank {written['rank']}, alpha {written['alpha']:g}, on "
             f"{', '.join(written['modules'])}) for `{base}`\n- `Modelfile`: for `ollama create` (FROM the base, "
             f"ADAPTER this file)\n- `{EXAMPLE_FILE}`: a prompt in the schema below")
    io.write_text(tmp / "README.md", export_card(name, base, train_cfg, prompt_format, fmt="a GGUF LoRA adapter",
                                                files=files, usage=usage))
    return {**written, "base": base, "prompt_format": prompt_format}


def _base_model(source: ModelSource) -> str:
    return str(source.train_cfg.get("model") or source.origin.get("base_model") or "")


def _write_gguf_folder(tmp: Path, cfg: ExportConfig, source: ModelSource, name: str, prompt_format: str) -> dict:
    written = write_model_gguf(tmp / MODEL_FILE, source, cfg.quant, name)
    prompt = render_prompt(example_record(Path(cfg.out)))
    io.write_text(tmp / EXAMPLE_FILE, prompt + "\n")
    tag = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._") or "covertune"  # an Ollama model name
    if source.origin.get("adapter"):  # the letters end where the adapter's recipe says (a stop of the Modelfile)
        recipe.add_end_tokens(source, source.origin["adapter"])
    modelfile = render_modelfile(source.tokenizer, prompt_format, prompt, context_length=written["context_length"],
                                 num_predict=cfg.max_new_tokens, generation_config=source.generation_config,
                                 example_file=EXAMPLE_FILE, name=tag)
    io.write_text(tmp / "Modelfile", modelfile)
    usage = (f"```bash\nollama create {tag} -f Modelfile\nollama run {tag} \"$(cat {EXAMPLE_FILE})\"\n"
             f"llama-cli -m {MODEL_FILE} -no-cnv -p \"$(cat {EXAMPLE_FILE})\"$'\\n' --temp 0 --repeat-penalty 1 "
             f"-n {cfg.max_new_tokens}\n```")
    files = (f"- `{MODEL_FILE}`: GGUF, {cfg.quant} ({', '.join(written['tensor_types'])} tensors), "
             f"llama architecture, context {written['context_length']}\n- `Modelfile`: for `ollama create`\n"
             f"- `{EXAMPLE_FILE}`: a prompt in the schema below")
    io.write_text(tmp / "README.md", export_card(name, _base_model(source), source.train_cfg, prompt_format,
                                                fmt=f"GGUF ({cfg.quant})", files=files, usage=usage))
    return written


def _write_safetensors_folder(tmp: Path, source: ModelSource, name: str, prompt_format: str) -> dict:
    if source.folder is not None:
        for p in sorted(source.folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.name != "README.md":
                shutil.copy2(p, tmp / p.name)
    else:
        save_merged(tmp, source.model, source.tokenizer, source.train_cfg, source.origin)
    usage = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
             "tok = AutoTokenizer.from_pretrained(\"PATH\")\nmodel = AutoModelForCausalLM.from_pretrained(\"PATH\")\n"
             "```\nor `covertune generate --merged PATH` / `covertune merge`'s consumers, which encode the prompt "
             "as training did.")
    files = (f"- `*.safetensors`, `config.json`, tokenizer files: the merged model\n"
             f"- `{rundir.TRAIN_INFO}`, `{rundir.MERGE_INFO}`: how it was trained and merged")
    io.write_text(tmp / "README.md", export_card(name, _base_model(source), source.train_cfg, prompt_format,
                                                fmt="merged safetensors", files=files, usage=usage))
    return {"files": sorted(p.name for p in tmp.iterdir())}


def export(cfg: ExportConfig) -> str:
    _validate(cfg)
    out = Path(cfg.out)
    target = export_dir(cfg)
    config, where = _source_config(cfg)
    if cfg.format in ("gguf", "gguf-lora"):
        check_architecture(config, where)
    identity = _identity(cfg)
    info_path = target / EXPORT_INFO
    if not cfg.force and info_path.exists():
        try:
            done = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            done = {}
        if done.get("identity") == identity:
            return f"export: {target} is complete (use --force to export again)"
    check_writable(target)
    name = cfg.name or f"covertune-{out.resolve().name}"
    if cfg.format == "gguf-lora":
        try:
            with io.atomic_dir(target) as tmp:
                written = _write_lora_folder(tmp, cfg, config, name)
                io.write_json(tmp / EXPORT_INFO, {"identity": identity, "prompt_format": written["prompt_format"],
                                                  "origin": {"adapter": str(adapter_folder(cfg).resolve())},
                                                  "written": written})
        except OSError as e:
            raise RuntimeError(f"writing the export to {target} failed: {e.strerror or e}; nothing was left there "
                               "(free some space or pass --export-dir)") from None
        return (f"export: wrote {target}: {LORA_FILE} (LoRA rank {written['rank']}, {written['tensors']} tensors) "
                f"and an Ollama Modelfile on the base {written['base']}")

    source = resolve_source(cfg)
    prompt_format = _prompt_format(cfg, source.train_cfg)
    try:
        with io.atomic_dir(target) as tmp:
            if cfg.format == "gguf":
                written = _write_gguf_folder(tmp, cfg, source, name, prompt_format)
            else:
                written = _write_safetensors_folder(tmp, source, name, prompt_format)
            io.write_json(tmp / EXPORT_INFO, {"identity": identity, "prompt_format": prompt_format,
                                              "origin": source.origin, "written": written})
    except OSError as e:
        raise RuntimeError(f"writing the export to {target} failed: {e.strerror or e}; nothing was left there "
                           "(free some space or pass --export-dir)") from None
    what = (f"{MODEL_FILE} ({cfg.quant}, {written['tensors']} tensors) and an Ollama Modelfile"
            if cfg.format == "gguf" else "the merged safetensors model with a model card")
    return f"export: wrote {target}: {what}"
