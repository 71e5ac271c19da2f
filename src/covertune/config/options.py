"""Option types and constants every config shares: a choice option's ``Literal`` type, ``opt`` (a field
with its help text and range), the default model and dataset names, the data limits' defaults and the
help texts several stages reuse. A leaf: it imports nothing from covertune.
"""

from __future__ import annotations

import typing
from dataclasses import field
from typing import Any, Literal

# the data limits' defaults (covertune.core.limits)
MAX_FIELD_CHARS = 20_000  # the shared dataset's longest field: 1,832 characters (a letter)
MAX_PROMPT_TOKENS = 2_048  # its longest prompt: 352 tokens of the embedded model's tokenizer (prompt_ids)

# ---------------------------------------------------------------- choice options: one type each

Quantization = Literal["nf4", "int8", "none"]
Dtype = Literal["auto", "bf16", "fp16", "fp32"]
LossOn = Literal["letter", "all"]
PromptFormat = Literal["raw", "chat"]
PromptFormatOrAuto = Literal["auto", "raw", "chat"]
Strategy = Literal["no", "steps", "epoch"]
AutoOnOff = Literal["auto", "on", "off"]
BaseWeights = Literal["auto", "original", "trained"]
Split = Literal["test", "validation"]
ModelName = Literal["base", "fine_tuned"]
Tracker = Literal["none", "tensorboard", "wandb", "mlflow", "trackio"]
Select = Literal["greedy", "mbr", "grounded-mbr", "classifier-mbr"]
ClassifyAction = Literal["train", "score"]
SplitAny = Literal["train", "validation", "test"]
ClassifierFeatures = Literal["text+checks", "text"]
Engine = Literal["auto", "plain", "static", "continuous", "llama.cpp"]
LetterEngine = Literal["auto", "torch", "llama.cpp"]  # covertune.generation.letter_engines
ExportFormat = Literal["gguf", "gguf-lora", "safetensors"]
GgufQuant = Literal["f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l",
                    "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"]
LogLevel = Literal["debug", "info", "warning", "error"]
CheckpointChoice = Literal["last", "loss", "rouge_l", "task"]
PreferenceLoss = Literal["dpo", "ipo", "rpo"]
Reject = Literal["invented", "any"]
ChosenFallback = Literal["none", "ground_truth"]
LetterForm = Literal["auto", "full", "body"]
Distributed = Literal["ddp", "fsdp"]


def choices(kind) -> tuple[str, ...]:
    """The values of a choice type (``choices(Quantization)`` -> ``("nf4", "int8", "none")``)."""
    return typing.get_args(kind)


def check_choice(name: str, value: Any, kind) -> str:
    """``value`` if it is one of ``kind``'s values, else a ValueError naming the option and its values."""
    if value not in choices(kind):
        raise ValueError(f"{name} must be one of {', '.join(choices(kind))}; got {value!r}")
    return value


def opt(default: Any, help: str, **kw):
    """A dataclass field with a help text, optional range bounds (ge, gt, le, lt) and a factory for
    mutable defaults."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


EMBEDDED_MODEL = "embedded"


DEFAULT_DATASET = "ShashiVish/cover-letter-dataset"


BASE_WEIGHTS_HELP = ("original (the unquantized checkpoint), trained (the base quantized as in training, "
                     "dequantized: what the adapter learned against), auto (trained for a 4-bit adapter, "
                     "else original)")


CANDIDATES_HELP = ("Candidate letters per prompt: the greedy letter plus N-1 samples, all from one batched "
                   "generate call (a batch then holds batch_size x N sequences); 1: greedy decoding alone")


SELECT_HELP = ("How one of the candidates is chosen (with --candidates above 1): greedy; mbr (the highest mean "
               "ROUGE-L against the other candidates); grounded-mbr (mbr among the candidates that pass the "
               "grounding check; the least-bad one when none does); classifier-mbr (grounded-mbr among the "
               "candidates the letter-quality classifier scores at least --classifier-threshold; the best-scored "
               "one when none does)")


CLASSIFIER_HELP = ("Letter-quality classifier for --select classifier-mbr: its classifier.json or folder "
                   "(default: <out>/classifier, written by `covertune classify train`)")


CLASSIFIER_THRESHOLD_HELP = "With --select classifier-mbr: candidates scored below this are dropped before MBR"


SELECT_REPETITION_HELP = ("With an MBR --select: each candidate's MBR score minus this times its repetition ratio "
                          "decides (0: plain MBR)")
SELECT_SKILLS_HELP = ("With an MBR --select: each candidate's MBR score plus this times its skills coverage (the "
                      "share of the applicant's skills the letter names) decides (0: plain MBR)")


MODEL_SOURCE_HELP = {
    "model": "Base model: HF hub id, local folder, or 'embedded'",
    "out": "Run directory whose model to use: its merged/ (with --merged) or adapter/ on the base, as "
           "`covertune generate` loads the fine-tuned model; empty: the base model alone",
    "adapter": "Adapter folder (default: <out>/adapter if present)",
    "merged": "Merged model folder (instead of base + adapter)",
}

FORM_HELP = ("Letter form: auto (as the model writes it), full (greeting, body, sign-off with the applicant's name: "
             "full-form candidates preferred among the grounded ones, a missing greeting or sign-off completed "
             "from the inputs), body (the letter without greeting and sign-off)")
