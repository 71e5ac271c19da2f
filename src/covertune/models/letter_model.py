"""A fine-tuned model ready to write letters (``LetterModel``), loaded from a model source (base model,
run directory, adapter or merged folder) as generate's fine-tuned pass loads it.
"""

from __future__ import annotations

import dataclasses

import contextlib
import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from covertune.config.options import BaseWeights, PromptFormat, check_choice, choices
from covertune.config.stages import GenerateConfig
from covertune.core import rundir
from covertune.core.prompt import prompt_ids, text_ids
from covertune.models import adapter_check, recipe
from covertune.models import load as models

log = logging.getLogger(__name__)


def resolve_format(cfg: GenerateConfig, train_cfg: dict) -> str:
    trained = train_cfg.get("prompt_format")
    if cfg.prompt_format == "auto":
        return trained if trained in choices(PromptFormat) else "raw"
    if trained and trained != cfg.prompt_format:
        log.warning("the adapter was trained with prompt_format %r but %r was asked for; the fine-tuned "
                    "letters will likely be worse", trained, cfg.prompt_format)
    return cfg.prompt_format


def free_model(model) -> None:
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fine_tuned_weights(cfg: GenerateConfig, merged: Path | None, adapter: Path | None, train_cfg: dict,
                        tokenizer):
    """The fine-tuned model as plain weights: the merged folder, or the adapter merged in memory into
    the base it learned against (quantized as in training, then dequantized)."""
    if merged is not None:
        log.info("loading the merged model %s", merged)
        return models.load_model(str(merged), "none", cfg.dtype, tokenizer=tokenizer,
                                 trust_remote_code=cfg.trust_remote_code)
    trained_q = train_cfg.get("quantization")
    log.info("loading %s quantized %s as in training, dequantized, and merging the adapter %s",
             cfg.model, trained_q, adapter)
    base = models.load_adapter_base(cfg.model, trained_q, "trained", cfg.dtype, tokenizer=tokenizer,
                                    trust_remote_code=cfg.trust_remote_code)
    return adapter_check.load_peft(base, adapter, cfg.model).merge_and_unload()


@dataclass
class LetterModel:
    """A model ready to write letters: the weights, the left-padding tokenizer, and the prompt format
    its prompts are encoded in (``covertune.core.prompt.prompt_ids`` / ``text_ids``)."""

    model: object
    tokenizer: object
    prompt_format: str
    source: str  # what was loaded, for logs and /v1/models

    def prompt_ids(self, record: dict) -> list[int]:
        """The ids fed for a record of the 8 fields, as ``covertune generate`` feeds them."""
        return prompt_ids(record, self.tokenizer, self.prompt_format)

    def text_ids(self, text: str) -> list[int]:
        """The ids fed for a free-text prompt, encoded as a record's rendered schema is."""
        return text_ids(text, self.tokenizer, self.prompt_format)


def letter_source(cfg):
    """What a model-source config (``cfg``) names: ``(cfg with the adapter's trained base as its model, the
    run directory or None, the adapter folder or None, the merged folder or None, the train config)``;
    the folders are checked (safetensors only, finite adapter weights, the base the adapter was trained
    on unless another is named: covertune.models.adapter_check)."""
    out = Path(cfg.out).expanduser() if cfg.out else None
    if out is not None and not out.is_dir():
        raise FileNotFoundError(f"run directory {out} does not exist")
    adapter = merged = None
    if out is not None or cfg.adapter or cfg.merged:
        adapter, merged = rundir.fine_tuned_source(out or "", cfg.adapter, cfg.merged)
    if merged or adapter:
        rundir.check_safetensors(merged or adapter)
    train_cfg = rundir.read_train_config(merged or adapter) if (merged or adapter) else {}
    if adapter is not None:
        cfg = dataclasses.replace(cfg, model=adapter_check.base_model(cfg.model, train_cfg, adapter))
        adapter_check.check_weights(adapter)
    return cfg, out, adapter, merged, train_cfg


def load_letter_model(cfg) -> LetterModel:
    """The model ``write`` and ``serve`` use, loaded as the fine-tuned pass of ``generate`` loads it: a
    merged folder, or the adapter (``cfg.adapter``, else ``<cfg.out>/adapter``) on the base it learned
    against; the base model alone when there is neither (``cfg.out`` empty, or a run without an adapter).
    ``cfg`` is any config with the model-source fields (covertune.config.groups.MODEL_SOURCE: ``model, out,
    adapter, merged, base_weights, prompt_format, dtype, trust_remote_code``) and optionally ``merge_adapter``
    (default: on, as generate's); nothing else is read."""
    check_choice("base_weights", cfg.base_weights, BaseWeights)
    cfg, out, adapter, merged, train_cfg = letter_source(cfg)
    prompt_format = resolve_format(cfg, train_cfg)
    tokenizer = models.load_tokenizer(cfg.model, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    base_weights = (models.resolve_base_weights(cfg.base_weights, train_cfg.get("quantization"))
                    if adapter is not None else None)
    if merged is not None or base_weights == "trained":
        model = fine_tuned_weights(cfg, merged, adapter, train_cfg, tokenizer)
        source = f"merged model {merged}" if merged else f"{cfg.model} + adapter {adapter} (merged in memory)"
    else:
        log.info("loading %s", cfg.model)
        model = models.load_model(cfg.model, "none", cfg.dtype, tokenizer=tokenizer,
                                  trust_remote_code=cfg.trust_remote_code)
        source = cfg.model
        if adapter is not None:
            log.info("loading the adapter %s", adapter)
            model = adapter_check.load_peft(model, adapter, cfg.model)
            source = f"{cfg.model} + adapter {adapter}"
            if getattr(cfg, "merge_adapter", True):  # as generate's fine-tuned pass: the same letters
                model = model.merge_and_unload()
                source += " (merged in memory)"
        elif out is not None:
            log.warning("%s holds no adapter or merged model: writing with the base model %s", out, cfg.model)
    recipe.add_end_tokens(model, merged or adapter)
    return LetterModel(model.eval(), tokenizer, prompt_format, source)


@contextlib.contextmanager
def merged_adapter(model):
    """The adapter of a PeftModel folded into its base weights while inside (peft's merge_adapter), and
    taken out again after (unmerge_adapter): each LoRA layer then runs one matrix product instead of three."""
    import torch

    with torch.no_grad():
        model.merge_adapter()
    try:
        yield model
    finally:
        with torch.no_grad():
            model.unmerge_adapter()
