"""The Ollama Modelfile written beside an exported GGUF: covertune's prompt contract as a TEMPLATE.

A runtime tokenizes the whole templated text at once (adding BOS when the file says to), while covertune
feeds the prompt's ids and then the separator's ids as training tokenized them before a letter
(covertune.core.prompt.prompt_ids). The template is built so the two agree, token for token:
- chat format: the model's chat template rendered around a placeholder user message, split at the
  placeholder (``{{ .Prompt }}`` takes its place), less a leading BOS the runtime adds itself;
- raw format: ``{{ .Prompt }}`` and the separator. Where the separator's text, tokenized after the
  prompt, would not give the separator's ids (byte-level BPE writes a trailing "\\n\\n" as one token,
  but training saw "\\n", "\\n" before the letter), the template ends with the longest part of it that
  does, and the model writes the rest itself, as it learned to.
The check is made on a rendered prompt when the file is written; a template that cannot agree is an error.
"""

from __future__ import annotations

from covertune.core.prompt import separator_ids, text_ids, wrap_chat

PLACEHOLDER = "<<covertune-prompt>>"
MODEL_FILE = "model.gguf"


def runtime_ids(tokenizer, text: str) -> list[int]:
    """How a runtime tokenizes a templated text: whole, special tokens parsed, BOS added per the tokenizer."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def template_parts(tokenizer, prompt_format: str, probe_prompt: str) -> tuple[str, str, int]:
    """``(prefix, suffix, left)``: the text around the prompt, and how many separator tokens the model
    writes itself (raw format) before the letter."""
    if prompt_format == "chat":
        rendered = wrap_chat(PLACEHOLDER, tokenizer)
        if rendered.count(PLACEHOLDER) != 1:
            raise ValueError("the chat template does not render the user message exactly once; "
                             "use --prompt-format raw")
        prefix, suffix = rendered.split(PLACEHOLDER)
        bos = tokenizer.bos_token
        added = runtime_ids(tokenizer, "x")[:1] == [tokenizer.bos_token_id] and tokenizer.bos_token_id is not None
        if added and bos and prefix.startswith(bos):
            prefix = prefix[len(bos):]  # the runtime adds BOS itself
        target = text_ids(probe_prompt, tokenizer, "chat")
        if runtime_ids(tokenizer, prefix + probe_prompt + suffix) != target:
            raise ValueError("the chat template's text does not tokenize as covertune encodes a chat prompt; "
                             "use --prompt-format raw")
        return prefix, suffix, 0
    sep = separator_ids(tokenizer)
    target = text_ids(probe_prompt, tokenizer, "raw")  # what generation feeds
    prompt_only = tokenizer(probe_prompt, add_special_tokens=False)["input_ids"]
    before = tokenizer.decode(prompt_only)
    for k in range(len(sep), -1, -1):
        # the separator's text alone, or as it reads after the prompt (a SentencePiece "▁" token is a space
        # there, while decoded alone it is dropped as the text's leading space)
        for suffix in dict.fromkeys([tokenizer.decode(sep[:k]) if k else "",
                                     tokenizer.decode(prompt_only + sep[:k])[len(before):] if k else ""]):
            if runtime_ids(tokenizer, probe_prompt + suffix) == target[:len(target) - len(sep) + k]:
                return "", suffix, len(sep) - k
    raise ValueError("the raw prompt does not tokenize the same whole as covertune encodes it; "
                     "the Modelfile cannot reproduce the prompt")


def _go_literal(text: str) -> str:
    """Literal text inside a Go template: a "{{" would open an action."""
    return text.replace("{{", '{{ "{{" }}')


def stop_texts(tokenizer, generation_config=None) -> list[str]:
    """The texts of the EOS token and of the generation config's other EOS ids."""
    ids = [tokenizer.eos_token_id]
    extra = getattr(generation_config, "eos_token_id", None)
    ids += extra if isinstance(extra, (list, tuple)) else [extra]
    texts = []
    for i in sorted({int(i) for i in ids if i is not None}):
        t = tokenizer.convert_ids_to_tokens(i)
        if t and '"' not in t and t not in texts:
            texts.append(t)
    return texts


def render_modelfile(tokenizer, prompt_format: str, probe_prompt: str, *, context_length: int,
                     num_predict: int = 512, generation_config=None, example_file: str = "example_prompt.txt",
                     name: str = "covertune", base: str = f"./{MODEL_FILE}", adapter: str | None = None) -> str:
    """The Modelfile: ``FROM base`` (the exported GGUF; for a LoRA, the base model) and, for a LoRA, ``ADAPTER``."""
    prefix, suffix, left = template_parts(tokenizer, prompt_format, probe_prompt)
    template = _go_literal(prefix) + "{{ .Prompt }}" + _go_literal(suffix)
    if '"""' in template:
        raise ValueError('the prompt template holds """, which a Modelfile TEMPLATE cannot quote')
    how = ("the model's chat template around it, as the model was trained" if prompt_format == "chat" else
           "the prompt as plain text, then the separator before the letter, as the model was trained"
           + (f" (the model writes the separator's last {left} token(s) itself)" if left else ""))
    lines = [
        "# Ollama Modelfile for a model fine-tuned with covertune.",
        f"#   ollama create {name} -f Modelfile",
        f'#   ollama run {name} "$(cat {example_file})"',
        "# The prompt is covertune's schema: the job's and the applicant's 8 fields, as in "
        f"{example_file}.",
        f"# TEMPLATE feeds {how}.",
        "# Greedy decoding (temperature 0, no repeat penalty), as covertune generates.",
        f"FROM {base}",
    ]
    if adapter:
        lines[-1:-1] = ["# FROM is the base model the adapter was trained on (a GGUF file, a safetensors folder or an",
                        "# Ollama model of the same weights); ADAPTER applies the fine-tune to it."]
        lines.append(f"ADAPTER ./{adapter}")
    lines.append(f'TEMPLATE """{template}"""')
    lines += [f'PARAMETER stop "{t}"' for t in stop_texts(tokenizer, generation_config)]
    lines += ["PARAMETER temperature 0", "PARAMETER top_k 1", "PARAMETER repeat_penalty 1",
              f"PARAMETER num_predict {num_predict}", f"PARAMETER num_ctx {min(context_length, 4096)}"]
    return "\n".join(lines) + "\n"


def template_of(modelfile: str) -> str:
    """The TEMPLATE text of a Modelfile written by render_modelfile."""
    start = modelfile.index('TEMPLATE """') + len('TEMPLATE """')
    return modelfile[start:modelfile.index('"""', start)]
