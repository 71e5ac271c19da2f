"""The prompt contract, in one home: the reference's rigid prompt schema, its encoding into the token
ids a model reads, and letter extraction from model output.

``prompt_ids(record, tokenizer, prompt_format)`` is what every user of a model feeds it: training (the
prompt part of an example, covertune.training.sft_data), generation, and anything that writes a letter. So the
fine-tuned model always continues from exactly the ids it learned to continue from:

    raw:  the tokenizer's special tokens (e.g. Llama's BOS) + the schema + the separator's ids
    chat: the chat template's text tokenized as it is (it holds its own special tokens), ending with
          the assistant turn's header
"""

from __future__ import annotations

import re

from covertune.core.records import INPUT_FIELDS, inputs_of

COVER_LETTER_HEADER = "### Cover Letter"
INSTRUCTION = "Using the information above, write a professional, personalized cover letter."

TEMPLATE = (
    "### Job Description\n"
    "Job Title: {job_title}\n"
    "Company: {hiring_company}\n"
    "Preferred Qualifications: {preferred_qualifications}\n"
    "\n"
    "### Applicant Resume\n"
    "Name: {applicant_name}\n"
    "Current Experience: {current_experience}\n"
    "Past Experience: {past_experience}\n"
    "Skills: {skillsets}\n"
    "Qualifications: {qualifications}\n"
    "\n"
    f"{COVER_LETTER_HEADER}\n"
    f"{INSTRUCTION}"
)

# The reference formatted nulls with Python's str(None); "None" keeps its prompts byte for byte.
REFERENCE_MISSING_TEXT = "None"
# Between the raw prompt and the letter; part of the prompt's ids (``separator_ids``).
LETTER_SEPARATOR = "\n\n"


def render_prompt(record: dict, missing_text: str = REFERENCE_MISSING_TEXT) -> str:
    """Render a record's inputs in the reference's schema. Empty fields render as ``missing_text``."""
    fields = {k: (v if v != "" else missing_text) for k, v in inputs_of(record).items()}
    return TEMPLATE.format(**fields)


def wrap_chat(prompt: str, tokenizer, system: str | None = None) -> str:
    """The same prompt inside the tokenizer's chat template, ready for the assistant's turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "prompt_format 'chat' needs a tokenizer with a chat template; this one has none. "
            "Use prompt_format 'raw'."
        )
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_prompt(record: dict, prompt_format: str = "raw", tokenizer=None,
                  missing_text: str = REFERENCE_MISSING_TEXT) -> str:
    """The model input for a record as text: the raw schema, or the schema wrapped in the chat template.
    The raw format's separator is not in it: it is added as token ids (``prompt_ids``)."""
    if prompt_format not in ("raw", "chat"):
        raise ValueError(f"prompt_format must be raw or chat, got {prompt_format!r}")
    prompt = render_prompt(record, missing_text)
    return wrap_chat(prompt, tokenizer) if prompt_format == "chat" else prompt


def separator_ids(tokenizer, separator: str = LETTER_SEPARATOR, probe: str = "Dear") -> list[int]:
    r"""The token ids the separator has where it precedes a letter.

    Appending ``separator`` to the prompt as text would not give them: byte-level BPE tokenizers
    (SmolLM2, GPT-2) encode a trailing "\n\n" as one token but "\n\nDear" as "\n", "\n", "Dear", so the
    fine-tuned model would be fed a token it never saw there. These are the whitespace-only leading
    tokens of ``separator + probe`` tokenized alone."""
    ids = tokenizer(separator + probe, add_special_tokens=False)["input_ids"]
    out: list[int] = []
    for i in ids:
        if tokenizer.decode(out + [i]).strip():
            break
        out.append(i)
    return out


def prompt_ids(record: dict, tokenizer, prompt_format: str = "raw") -> list[int]:
    """The token ids a model is fed for ``record``, exactly as training saw them before the letter:
    raw: the tokenizer's special tokens (BOS) + the schema + ``separator_ids``; chat: the chat
    template's text alone (it holds its own special tokens), ending with the assistant's header."""
    format_prompt(record, prompt_format, tokenizer)  # checks the format (and a chat template) first
    return text_ids(render_prompt(record), tokenizer, prompt_format)


def text_ids(prompt: str, tokenizer, prompt_format: str = "raw") -> list[int]:
    """The ids of any prompt text encoded as ``prompt_ids`` encodes the schema (a server's free-text
    prompt, e.g. an OpenAI chat message): raw: special tokens + text + separator ids; chat: the text
    inside the chat template."""
    if prompt_format == "chat":
        return list(tokenizer(wrap_chat(prompt, tokenizer), add_special_tokens=False)["input_ids"])
    if prompt_format != "raw":
        raise ValueError(f"prompt_format must be raw or chat, got {prompt_format!r}")
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"]) + separator_ids(tokenizer)


def letter_ids(letter: str, tokenizer, prompt_format: str = "raw") -> list[int]:
    """A letter's token ids as they follow ``prompt_ids`` (no EOS). For the raw format the letter is
    tokenized after the separator, as it reads in running text, and the separator's ids (which belong
    to the prompt) are taken off its front; should a tokenizer merge them with the letter's first
    characters, the letter is tokenized alone."""
    letter = letter.strip()
    if prompt_format == "chat":
        return list(tokenizer(letter, add_special_tokens=False)["input_ids"])
    joint = list(tokenizer(LETTER_SEPARATOR + letter, add_special_tokens=False)["input_ids"])
    sep = separator_ids(tokenizer)
    if joint[:len(sep)] == sep:
        return joint[len(sep):]
    return list(tokenizer(letter, add_special_tokens=False)["input_ids"])


def extract_letter(output: str) -> str:
    """The letter alone from a decoded output: everything through the "### Cover Letter" header and
    the instruction sentence removed, then stripped. An output without the header (the continuation
    alone) is only stripped of a leading instruction sentence and white space."""
    idx = output.find(COVER_LETTER_HEADER)
    text = output[idx + len(COVER_LETTER_HEADER):] if idx >= 0 else output
    text = text.replace(INSTRUCTION, "", 1) if INSTRUCTION in text[: len(INSTRUCTION) + 8] else text
    return text.strip()


# ---------------------------------------------------------------- the prompt, parsed back (render_prompt's inverse)


def _template_regex() -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", TEMPLATE)  # literal, field, literal, field, ..., literal
    pattern = ""
    for i, part in enumerate(parts):
        pattern += f"(?P<{part}>.*?)" if i % 2 else re.escape(part)
    return re.compile(pattern, re.DOTALL)


_PROMPT_RE = _template_regex()


def parse_prompt(prompt: str, missing_text: str = REFERENCE_MISSING_TEXT) -> dict[str, str]:
    """The eight input fields of a prompt rendered by covertune.core.prompt.render_prompt (also when wrapped
    in a chat template). A field rendered as ``missing_text`` ("None") comes back as ""."""
    m = _PROMPT_RE.search(prompt)
    if m is None:
        raise ValueError("the prompt is not in covertune's prompt schema (\"### Job Description ... "
                         f"### Cover Letter\\n{INSTRUCTION}\")")
    return {k: ("" if m.group(k) == missing_text else m.group(k)) for k in INPUT_FIELDS}


def try_parse_prompt(prompt: str) -> dict[str, str] | None:
    try:
        return parse_prompt(prompt)
    except ValueError:
        return None
