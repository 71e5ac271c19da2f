"""Option groups several stages share, each field declared once with its default, help text and range.

``MODEL_SOURCE`` (which model writes: base, run directory, adapter or merged folder), ``DECODING`` (what
``model.generate`` is told) and ``CANDIDATES`` (several letters per prompt and how one is chosen) are used
by generate, write and serve, ``LETTER_ENGINE`` (torch or llama.cpp) by write and serve (export and prefer take a few model-source fields). A stage config takes a
field from a group (``DECODING.field("top_p")``), optionally with its own help text or default; the range
comes with it, so ``build`` and ``validate`` check it for every stage alike, before any model loads. The
stage configs stay flat: the flags and YAML keys are the field names, as before.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from covertune.config.options import (
    BASE_WEIGHTS_HELP, CANDIDATES_HELP, CLASSIFIER_HELP, CLASSIFIER_THRESHOLD_HELP, EMBEDDED_MODEL, FORM_HELP,
    MODEL_SOURCE_HELP, SELECT_HELP, SELECT_REPETITION_HELP, SELECT_SKILLS_HELP, opt,
)

BOUNDS = ("ge", "gt", "le", "lt")
MAX_SEED = 2**32 - 1  # numpy's (and so transformers.set_seed's) largest seed


@dataclass(frozen=True)
class Spec:
    """One option: its default, help text and range (``ge``/``gt``/``le``/``lt``)."""

    default: Any
    help: str
    bounds: dict = field(default_factory=dict)


def spec(default: Any, help: str, **bounds) -> Spec:
    unknown = set(bounds) - set(BOUNDS)
    if unknown:
        raise TypeError(f"unknown bound(s) {sorted(unknown)}")
    return Spec(default, help, bounds)


class Group:
    """Named option specs; ``field(name)`` is the dataclass field a stage config declares."""

    def __init__(self, title: str, **specs: Spec):
        self.title, self.specs = title, specs

    def field(self, name: str, *, help: str | None = None, default: Any = dataclasses.MISSING):
        s = self.specs[name]
        return opt(s.default if default is dataclasses.MISSING else default, s.help if help is None else help,
                   group=self.title, **s.bounds)

    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)


MODEL_SOURCE = Group(
    "model source",
    model=spec(EMBEDDED_MODEL, MODEL_SOURCE_HELP["model"]),
    out=spec("", MODEL_SOURCE_HELP["out"]),
    adapter=spec("", MODEL_SOURCE_HELP["adapter"]),
    merged=spec("", MODEL_SOURCE_HELP["merged"]),
    base_weights=spec("auto", f"Base weights under the adapter: {BASE_WEIGHTS_HELP}"),
    prompt_format=spec("auto", "auto (the adapter's training format, else raw), raw or chat"),
    dtype=spec("auto", "auto, bf16, fp16, fp32"),
    trust_remote_code=spec(False, "Allow model code from the hub"),
)

DECODING = Group(
    "decoding",
    max_new_tokens=spec(512, "Max new tokens per letter", ge=1),
    do_sample=spec(False, "Sample instead of greedy decoding"),
    temperature=spec(1.0, "Sampling temperature (> 0 when sampling)", ge=0),
    top_p=spec(1.0, "Nucleus sampling p", gt=0, le=1),
    top_k=spec(50, "Top-k sampling (0: off); only with --do-sample", ge=0),
    repetition_penalty=spec(1.0, "Repetition penalty (1.0: off)", gt=0),
    seed=spec(42, "Seed for sampling", ge=0, le=MAX_SEED),
)

CANDIDATES = Group(
    "candidates",
    candidates=spec(1, CANDIDATES_HELP, ge=1),
    select=spec("grounded-mbr", SELECT_HELP),
    select_repetition_weight=spec(0.0, SELECT_REPETITION_HELP, ge=0),
    select_skills_weight=spec(0.0, SELECT_SKILLS_HELP, ge=0),
    candidate_temperature=spec(0.7, "Sampling temperature of the candidates after the first", gt=0),
    candidate_top_p=spec(0.95, "Nucleus sampling p of the candidates after the first (top-k: --top-k)", gt=0, le=1),
    classifier=spec("", CLASSIFIER_HELP),
    classifier_threshold=spec(0.5, CLASSIFIER_THRESHOLD_HELP, ge=0, le=1),
    form=spec("auto", FORM_HELP),
)

LETTER_ENGINE = Group(
    "letter engine",
    engine=spec("auto", "torch (transformers), llama.cpp (the model as a GGUF file, exported once into "
                "<out>/.engine/, candidates decoded in one batch), auto (llama.cpp on a machine without a GPU "
                "where llama-cpp-python is installed, else torch)"),
    gguf_quant=spec("q8_0", "With the llama.cpp engine: the GGUF's weight type (as export's --quant)"),
    threads=spec(0, "With the llama.cpp engine: CPU threads (0: the physical cores)", ge=0),
)


def check_decoding(cfg) -> None:
    """The rule across decoding fields: sampling needs a temperature above 0."""
    if cfg.do_sample and cfg.temperature <= 0:
        raise ValueError("temperature must be > 0 when sampling (use greedy decoding instead)")
