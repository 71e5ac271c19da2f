"""`covertune write`: one cover letter from the command line.

The 8 input fields come from, in rising precedence: a YAML or JSON file of the fields by their record
names (``--input``); a plain-text job posting (``--job-posting``, which becomes
``preferred_qualifications``) and a plain-text resume (``--resume``, which becomes
``current_experience``); the field flags (``--job-title``, ``--hiring-company``, ...). Fields left empty
render as the prompt contract says ("None"). The model is a run's fine-tuned model (``--out``), loaded as
``covertune generate`` loads it, or the base model alone (``--model``); the prompt is encoded and the
letter generated and extracted by generate's own functions, so a greedy letter is the one ``covertune
generate`` writes for the same inputs and model. ``--json`` prints the letter with the evaluate stage's
grounding check (names, company, skills, numbers and organisations the inputs do not support).
``--candidates N --select grounded-mbr`` writes N letters in one batched call and prints the one chosen
as ``covertune generate`` chooses (covertune.generation.select); ``--json`` then lists every candidate with its
grounding failures and MBR score. The completion tokens count every candidate.

With no model named, the shipped model (covertune.models.shipped) writes; the decoding options left at their
defaults take the recipe of the model loaded (covertune.models.recipe: the shipped model's, or ``<out>/recipe.json``
that ``covertune generate`` recorded). ``--form`` full (the default) gives a greeting, the body and a
sign-off with the applicant's name (covertune.generation.letter_form).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from covertune.config.build import validate
from covertune.config.stages import WriteConfig
from covertune.core.limits import context_overflow
from covertune.core.records import INPUT_FIELDS
from covertune.generation.decoding import Decoding
from covertune.generation.letter_engines import load_letter_model
from covertune.generation.letter_form import apply_form
from covertune.generation.letters import generate_letters
from covertune.models.load import model_context
from covertune.generation.select import check_candidates, candidate_decoding, generate_chosen_letters
from covertune.metrics.grounding import ground_json
from covertune.models.recipe import resolve_letter_model

log = logging.getLogger(__name__)

TEXT_FILE_FIELDS = {"job_posting": "preferred_qualifications", "resume": "current_experience"}


def _read_text(path: str, option: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--{option.replace('_', '-')} {p}: no such file")
    try:
        return p.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"--{option.replace('_', '-')} {p}: not UTF-8 text; save it as plain text") from None


def read_input_file(path: str) -> dict[str, str]:
    """The fields of a YAML/JSON file (a mapping of record names to text), their text as written (a dataset
    row's " Data Scientist" keeps its space, as `covertune generate` and `covertune serve` keep it)."""
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"--input {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"--input {p}: not valid YAML or JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--input {p}: expected a mapping of field: text with fields {', '.join(INPUT_FIELDS)}")
    unknown = sorted(str(k) for k in data if k not in INPUT_FIELDS)
    if unknown:
        raise ValueError(f"--input {p}: unknown field(s) {unknown}; the fields are {', '.join(INPUT_FIELDS)}")
    out = {}
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            raise ValueError(f"--input {p}: field {k!r} must be text, got a {type(v).__name__}")
        out[k] = "" if v is None else str(v)  # as written: the same fields as a served request's, the same letter
    return out


def collect_fields(cfg: WriteConfig) -> dict[str, str]:
    fields = {k: "" for k in INPUT_FIELDS}
    if cfg.input:
        fields.update(read_input_file(cfg.input))
    for option, field in TEXT_FILE_FIELDS.items():
        if getattr(cfg, option):
            fields[field] = _read_text(getattr(cfg, option), option)
    for k in INPUT_FIELDS:
        if getattr(cfg, k):
            fields[k] = getattr(cfg, k)
    if not any(fields.values()):
        raise ValueError("no inputs: give the fields as flags (--job-title, --hiring-company, --applicant-name, "
                         "...), a file with --input, or --job-posting/--resume text files")
    return fields


def check_fits(ids: list[int], fields: dict[str, str], cfg: WriteConfig, model) -> None:
    """The prompt and --max-new-tokens fit the model's context (``limits.context_overflow``, the check
    generate and serve make), else a one-line error naming the option to shorten."""
    found = context_overflow(len(ids), cfg.max_new_tokens, model_context(model))
    if found is None:
        return
    if found[0] != "prompt":
        raise ValueError(f"{found[1]}; lower --max-new-tokens")
    longest = max(fields, key=lambda k: len(fields[k]))
    options = {v: k for k, v in TEXT_FILE_FIELDS.items() if getattr(cfg, k) and not getattr(cfg, v)}
    option = options.get(longest, longest)
    raise ValueError(f"{found[1]}; shorten --{option.replace('_', '-')}")


def write(cfg: WriteConfig) -> str:
    resolve_letter_model(cfg)  # the shipped model when none is named; the recipe of the model loaded
    validate(cfg)  # the decoding and candidate ranges (covertune.config.groups), before the model loads
    check_candidates(cfg)
    classifier = None
    if cfg.candidates > 1 and cfg.select == "classifier-mbr":  # before the model loads
        from covertune.classify.model import load_classifier  # scikit-learn: only where it is used

        classifier, _ = load_classifier(cfg.classifier, cfg.out)
    fields = collect_fields(cfg)
    lm = load_letter_model(cfg.engine, cfg, quant=cfg.gguf_quant, threads=cfg.threads)
    log.info("writing with %s (%s prompts)", lm.source, lm.prompt_format)
    ids = lm.prompt_ids(fields)
    check_fits(ids, fields, cfg, lm.model)
    decoding = Decoding(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, temperature=cfg.temperature,
                        top_p=cfg.top_p, top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed)
    stats: dict = {}
    choice = None
    if cfg.candidates > 1:
        letters, choices = generate_chosen_letters(lm.model, lm.tokenizer, [ids], [fields], cfg.candidates,
                                                   cfg.select, candidate_decoding(cfg), batch_size=1,
                                                   stats=stats, progress=False, classifier=classifier,
                                                   threshold=cfg.classifier_threshold,
                                                   repetition_weight=cfg.select_repetition_weight,
                                                   skills_weight=cfg.select_skills_weight)
        letter, choice = letters[0], choices[0]
    else:
        letter = generate_letters(lm.model, lm.tokenizer, [ids], 1, decoding, stats=stats, progress=False)[0]
    letter = apply_form(letter, cfg.form, fields)
    if not cfg.json:
        return letter
    prompt_tokens = len(ids)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": stats["new_tokens"],
             "total_tokens": prompt_tokens + stats["new_tokens"]}
    result = {"letter": letter, "grounding": ground_json(letter, fields), "usage": usage, "model": lm.source,
              "form": cfg.form}
    if choice is not None:
        result["candidates"] = choice
    return json.dumps(result, ensure_ascii=False, indent=2)
