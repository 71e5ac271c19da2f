"""The one table of covertune's commands: each stage's name, config dataclass, entry point, help text,
whether ``covertune run`` chains it, and whether it runs in several processes (``--num-gpus``).

The CLI builds its subcommands from it (covertune.cli), ``covertune run`` and ``covertune sweep`` reach
the stages through it (covertune.stages.pipeline, covertune.stages.sweep), and config.build knows the
stage configs from it. Entry points are ``"module:function"`` strings, imported only when a stage runs,
so ``covertune --help`` loads no stage module (nor torch).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from covertune.config.stages import (
    ClassifyConfig, CompareConfig, DataConfig, EvaluateConfig, ExportConfig, GenerateConfig, MergeConfig,
    PreferConfig, ReportConfig, ServeConfig, SweepConfig, TrainConfig, WriteConfig,
)


@dataclass(frozen=True)
class Stage:
    name: str
    config: type | None  # None: a command with its own flags (run)
    entry: str  # "module:function", the function taking the config
    help: str
    in_pipeline: bool = False  # chained by `covertune run`, in table order
    distributed: bool = False  # may run in several processes, one per GPU

    def function(self) -> Callable:
        module, func = self.entry.split(":")
        return getattr(importlib.import_module(module), func)


HELP = {
    "data": "load, validate, clean, flag and split a cover-letter dataset",
    "train": "QLoRA fine-tuning of a base model on the data stage's splits",
    "prefer": "preference tuning for grounding after SFT (TRL's DPO): pairs from the SFT model's own letters on "
              "the training split, grounded (chosen) vs with invented facts (rejected); writes <out>/preference_adapter",
    "merge": "merge the adapter into the base model in fp16/bf16",
    "generate": "write base and fine-tuned letters for the test split to eval.csv",
    "evaluate": "score an eval.csv: ROUGE-L, BERTScore, repetition, grounding",
    "report": "plots, report.md and a self-contained report.html",
    "write": "write one letter from the 8 fields (flags, a YAML/JSON file, or a posting and a resume)",
    "serve": "HTTP server: /v1/cover-letter, OpenAI- and Ollama-compatible routes, dynamic batching",
    "export": "the fine-tuned model as GGUF (llama.cpp, Ollama, LM Studio) with an Ollama Modelfile, "
              "or as a merged safetensors folder with a model card",
    "sweep": "train a grid of recipe variants, rank them on the validation split, optionally test the winner",
    "compare": "several runs' evaluate outputs side by side: compare.md, compare.csv, compare.html",
    "classify": "the letter-quality classifier: train it on a run's train split (with its precision/recall "
                "report) or score letters with it",
    "run": "all stages end to end in one run directory, resuming where a run stopped",
}

# name, config, entry point, chained by `covertune run`, several processes; in the CLI's order
TABLE = (
    ("data", DataConfig, "covertune.stages.data:run_data", True, False),
    ("train", TrainConfig, "covertune.stages.train:train", True, True),
    ("prefer", PreferConfig, "covertune.stages.prefer:prefer", True, False),
    ("merge", MergeConfig, "covertune.stages.merge:merge", True, False),
    ("generate", GenerateConfig, "covertune.stages.generate:generate", True, True),
    ("evaluate", EvaluateConfig, "covertune.stages.evaluate:evaluate", True, False),
    ("report", ReportConfig, "covertune.stages.report:report", True, False),
    ("write", WriteConfig, "covertune.stages.write:write", False, False),
    ("serve", ServeConfig, "covertune.stages.serve:serve", False, False),
    ("export", ExportConfig, "covertune.stages.export:export", False, False),
    ("sweep", SweepConfig, "covertune.stages.sweep:sweep", False, False),
    ("compare", CompareConfig, "covertune.stages.compare:compare", False, False),
    ("classify", ClassifyConfig, "covertune.stages.classify:classify", False, False),
    ("run", None, "covertune.stages.pipeline:pipeline_from_args", False, False),
)
STAGES: tuple[Stage, ...] = tuple(Stage(name, config, entry, HELP[name], in_pipeline, several)
                                  for name, config, entry, in_pipeline, several in TABLE)
BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    return BY_NAME[name]


def stage_configs() -> dict[str, type]:
    """Each configurable stage's config dataclass, by name, in table order."""
    return {s.name: s.config for s in STAGES if s.config is not None}


def pipeline_stages() -> tuple[str, ...]:
    """The stages `covertune run` chains, in order (prefer and merge only when switched on)."""
    return tuple(s.name for s in STAGES if s.in_pipeline)


def distributed_stages() -> tuple[str, ...]:
    """The stages that may run in several processes, one per GPU."""
    return tuple(s.name for s in STAGES if s.distributed)


def check_distributed(name: str) -> None:
    """``covertune <name>`` may run in several processes, else a ValueError saying which stages can."""
    if name not in distributed_stages():
        raise ValueError(f"--num-gpus: covertune {name} runs in one process; only "
                         f"{' and '.join(distributed_stages())} run on several GPUs")
