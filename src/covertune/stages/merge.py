"""`covertune merge`: the adapter merged into its base model in fp16/bf16, saved as <out>/merged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from covertune.config.build import validate
from covertune.config.stages import MergeConfig
from covertune.core import io, rundir
from covertune.models import load as models
from covertune.models.merge import merged_model, save_merged

log = logging.getLogger(__name__)


def merge(cfg: MergeConfig) -> str:
    validate(cfg)
    out = rundir.check_out(cfg.out)
    target = rundir.merged_dir(out)
    adapter = rundir.find_adapter(out, cfg.adapter)
    rundir.check_safetensors(adapter)
    train_cfg = rundir.read_train_config(adapter)
    trained_q = train_cfg.get("quantization", "none")
    base_weights = models.resolve_base_weights(cfg.base_weights, trained_q)
    dtype_name = str(models.compute_dtype(cfg.dtype)).replace("torch.", "")
    # what the merged model is built from; merging is cheap next to training, so a merged folder built
    # from anything else is merged again rather than refused
    inputs = {"adapter": rundir.path_hash(adapter)}
    if Path(cfg.model).expanduser().is_dir():
        inputs["model"] = rundir.model_identity(cfg.model)
    fp = rundir.fingerprint({"model": cfg.model, "dtype": dtype_name, "base_weights": base_weights}, inputs)
    try:
        if rundir.check_stage(out, "merge", fp, (target / "config.json").exists(), cfg.force, str(target)):
            return f"merge: {target} is complete (use --force to merge again)"
    except rundir.StaleStage as e:
        log.info("merging again: %s", e.args[0].split(" pass --force")[0])

    merged, tokenizer, info = merged_model(cfg, adapter, train_cfg)
    with io.atomic_dir(target) as tmp:
        save_merged(tmp, merged, tokenizer, train_cfg, info)
    rundir.mark_done(out, "merge", {**info, "fingerprint": fp})
    base_name = f"{cfg.model}, {trained_q} dequantized" if base_weights == "trained" else cfg.model
    return f"merge: wrote {target} ({info['dtype']}, base {base_name} + adapter {adapter})"
