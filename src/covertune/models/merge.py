"""Merge a LoRA adapter into its base model and save the full model.

The merged weights are never k-bit (fp16/bf16, or fp32 on the CPU): merging into 4/8-bit weights would
round the adapter's small updates away. The base under the adapter is, by default, the one it learned
against: for a 4-bit (QLoRA) adapter the base quantized as in training and dequantized again, since the
adapter partly corrects that rounding (``--base-weights original`` takes the unquantized checkpoint).
The merged model is written to a temporary folder beside ``<out>/merged`` and renamed into place, so a
crash never leaves a half-written model behind.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from covertune.config.stages import MergeConfig
from covertune.core import io, rundir
from covertune.models import adapter_check
from covertune.models import load as models

log = logging.getLogger(__name__)


def merged_model(cfg: MergeConfig, adapter: Path | None = None, train_cfg: dict | None = None):
    """The adapter merged into the base it learned against, in memory: ``(model, tokenizer, info)``.

    ``info`` records what the model was built from (base, adapter, dtype, base weights)."""
    adapter = adapter or rundir.find_adapter(cfg.out, cfg.adapter)
    train_cfg = rundir.read_train_config(adapter) if train_cfg is None else train_cfg
    trained_q = train_cfg.get("quantization", "none")
    base_weights = models.resolve_base_weights(cfg.base_weights, trained_q)
    cfg = dataclasses.replace(cfg, model=adapter_check.base_model(cfg.model, train_cfg, adapter))
    adapter_check.check_weights(adapter)

    dtype = models.compute_dtype(cfg.dtype)
    dtype_name = str(dtype).replace("torch.", "")
    if base_weights == "trained":
        log.info("the adapter was trained on a %s base; merging into that base dequantized to %s "
                 "(--base-weights original merges into the unquantized checkpoint)", trained_q, dtype_name)
    elif trained_q not in ("", "none", None):
        log.info("the adapter was trained on a %s-quantized base; merging into the unquantized %s base "
                 "(merging into %s weights would lose the adapter's precision)", trained_q, dtype_name, trained_q)

    log.info("loading %s in %s and the adapter %s", cfg.model, dtype_name, adapter)
    tokenizer = models.load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code)
    base = models.load_adapter_base(cfg.model, trained_q, base_weights, cfg.dtype, tokenizer=tokenizer,
                                    trust_remote_code=cfg.trust_remote_code)
    peft_model = adapter_check.load_peft(base, adapter, cfg.model)
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
        io.write_json(folder / rundir.TRAIN_INFO, train_cfg)
    io.write_json(folder / rundir.MERGE_INFO, info)


