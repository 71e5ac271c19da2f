"""The model card (README.md) of an exported model: what it is, how it was trained, how to prompt it."""

from __future__ import annotations

import json

from covertune.core.prompt import LETTER_SEPARATOR, TEMPLATE

TRAIN_KEYS = ("quantization", "lora_r", "lora_alpha", "target_modules", "epochs", "max_steps", "learning_rate",
              "batch_size", "grad_accum", "max_length", "loss_on", "prompt_format", "seed")


def model_card(name: str, base_model: str, train_cfg: dict, prompt_format: str, *, fmt: str,
               files: str, usage: str) -> str:
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
