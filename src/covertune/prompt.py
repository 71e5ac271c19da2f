"""The prompt contract: the reference's rigid prompt schema, and letter extraction from model output."""

from __future__ import annotations

from covertune.records import inputs_of

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
PROMPT_FORMATS = ("raw", "chat")
# Between the raw prompt and the letter in the training text; generation feeds its tokens after the prompt.
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
    """The model input for a record: the raw schema, or the schema wrapped in the chat template."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    prompt = render_prompt(record, missing_text)
    return wrap_chat(prompt, tokenizer) if prompt_format == "chat" else prompt


def extract_letter(output: str) -> str:
    """The letter alone from a decoded output: everything through the "### Cover Letter" header and
    the instruction sentence removed, then stripped. An output without the header (the continuation
    alone) is only stripped of a leading instruction sentence and white space."""
    idx = output.find(COVER_LETTER_HEADER)
    text = output[idx + len(COVER_LETTER_HEADER):] if idx >= 0 else output
    text = text.replace(INSTRUCTION, "", 1) if INSTRUCTION in text[: len(INSTRUCTION) + 8] else text
    return text.strip()
