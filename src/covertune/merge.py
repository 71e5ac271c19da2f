"""Merge a LoRA adapter into its base model and save the full model.

The merged weights are never k-bit (fp16/bf16, or fp32 on the CPU): merging into 4/8-bit weights would
round the adapter's small updates away. The base under the adapter is, by default, the one it learned
against: for a 4-bit (QLoRA) adapter the base quantized as in training and dequantized again, since the
adapter partly corrects that rounding (``--base-weights original`` takes the unquantized checkpoint).
The merged model is written to a temporary folder beside ``<out>/merged`` and renamed into place, so a
crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from covertune import io, models
from covertune.config import MergeConfig

log = logging.getLogger(__name__)

TRAIN_CONFIG_FILE = "covertune_train.json"  # written by the train stage into the adapter folder
MERGE_INFO_FILE = "covertune_merge.json"


def adapter_dir(out: str | Path, adapter: str = "") -> Path:
    """The adapter folder: ``adapter`` if given, else ``<out>/adapter``; checked to hold an adapter."""
    path = Path(adapter).expanduser() if adapter else Path(out) / "adapter"
    if not (path / "adapter_config.json").exists():
        hint = "" if adapter else "; run `covertune train` first or pass --adapter"
        raise FileNotFoundError(f"no PEFT adapter at {path} (adapter_config.json missing){hint}")
    return path


def read_train_config(folder: str | Path) -> dict:
    """The train stage's config saved beside an adapter (or a merged model); {} if there is none."""
    path = Path(folder) / TRAIN_CONFIG_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg})") from e
    return data if isinstance(data, dict) else {}


def check_base_model(model: str, train_cfg: dict, adapter: Path) -> None:
    """Warn when the base model named now is not the one the adapter was trained on."""
    trained = train_cfg.get("model")
    if not trained or trained == model:
        return
    try:
        same = models.resolve_model(trained) == models.resolve_model(model)
    except Exception:  # the trained-on model may not exist here; a name mismatch is still worth a word
        same = False
    if not same:
        log.warning("the adapter in %s was trained on %r but the base model given is %r; "
                    "pass --model %s if that is a mistake", adapter, trained, model, trained)


def merged_model(cfg: MergeConfig, adapter: Path | None = None, train_cfg: dict | None = None):
    """The adapter merged into the base it learned against, in memory: ``(model, tokenizer, info)``.

    ``info`` records what the model was built from (base, adapter, dtype, base weights)."""
    adapter = adapter or adapter_dir(cfg.out, cfg.adapter)
    train_cfg = read_train_config(adapter) if train_cfg is None else train_cfg
    trained_q = train_cfg.get("quantization", "none")
    base_weights = models.resolve_base_weights(cfg.base_weights, trained_q)
    check_base_model(cfg.model, train_cfg, adapter)

    dtype = models.compute_dtype(cfg.dtype)
    dtype_name = str(dtype).replace("torch.", "")
    if base_weights == "trained":
        log.info("the adapter was trained on a %s base; merging into that base dequantized to %s "
                 "(--base-weights original merges into the unquantized checkpoint)", trained_q, dtype_name)
    elif trained_q not in ("", "none", None):
        log.info("the adapter was trained on a %s-quantized base; merging into the unquantized %s base "
                 "(merging into %s weights would lose the adapter's precision)", trained_q, dtype_name, trained_q)

    from peft import PeftModel

    log.info("loading %s in %s and the adapter %s", cfg.model, dtype_name, adapter)
    tokenizer = models.load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    base = models.load_adapter_base(cfg.model, trained_q, base_weights, cfg.dtype, tokenizer=tokenizer,
                                    trust_remote_code=cfg.trust_remote_code)
    peft_model = PeftModel.from_pretrained(base, str(adapter))
    merged = peft_model.merge_and_unload()
    merged.eval()
    info = {"base_model": cfg.model, "base_model_path": models.resolve_model(cfg.model),
            "adapter": str(adapter), "dtype": dtype_name, "trained_quantization": trained_q or "none",
            "base_weights": base_weights}
    return merged, tokenizer, info


def save_merged(folder: Path, model, tokenizer, train_cfg: dict, info: dict) -> None:
    """Write a merged model as ``covertune merge`` lays it out (safetensors, tokenizer, the train
    stage's config and the merge info)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if train_cfg:  # so generate's prompt_format 'auto' finds the training format in the merged folder too
        io.write_json(folder / TRAIN_CONFIG_FILE, train_cfg)
    io.write_json(folder / MERGE_INFO_FILE, info)


def merge(cfg: MergeConfig) -> str:
    out = Path(cfg.out)
    target = out / "merged"
    adapter = adapter_dir(out, cfg.adapter)
    train_cfg = read_train_config(adapter)
    trained_q = train_cfg.get("quantization", "none")
    base_weights = models.resolve_base_weights(cfg.base_weights, trained_q)
    done = io.stage_info(out, "merge")
    if done is not None and (target / "config.json").exists() and not cfg.force:
        if done.get("adapter") == str(adapter) and done.get("base_weights", "original") == base_weights:
            return f"merge: {target} is complete (use --force to merge again)"
        log.info("merging again: %s was merged from another adapter or base", target)

    merged, tokenizer, info = merged_model(cfg, adapter, train_cfg)
    with io.atomic_dir(target) as tmp:
        save_merged(tmp, merged, tokenizer, train_cfg, info)
    io.mark_done(out, "merge", info)
    base_name = f"{cfg.model}, {trained_q} dequantized" if base_weights == "trained" else cfg.model
    return f"merge: wrote {target} ({info['dtype']}, base {base_name} + adapter {adapter})"
