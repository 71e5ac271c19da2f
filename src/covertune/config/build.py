"""A stage config from layers: the stage's defaults < a named preset < a YAML file (``--config``) < flags.

``build`` coerces each value to its field's type (YAML's ``off``/``no`` booleans back to the choice they
spell) and ``validate`` checks every value against its type and range, before any model loads.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal
import yaml

from covertune.config.groups import check_decoding
from covertune.config.options import ModelName, check_choice, choices
from covertune.config.stages import GenerateConfig, PreferConfig, TrainConfig, WriteConfig
from covertune.core.records import FLAG_NAMES
from covertune.registry import stage_configs



# how YAML 1.1 spells a boolean: a choice option written as one of these was meant as that word
_YAML_TRUE = ("on", "yes", "true", "y")


_YAML_FALSE = ("off", "no", "false", "n")


STAGE_CONFIGS: dict[str, type] = stage_configs()  # from covertune.registry, the one stage table


def preset_names() -> list[str]:
    files = resources.files("covertune").joinpath("presets")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    path = resources.files("covertune").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def load_yaml(path: str | Path, what: str = "config file") -> dict:
    """A YAML file holding a mapping; one-line errors name ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value at the top level")
    return data


def section(values: dict, stage: str) -> dict:
    """The options for one stage from a config mapping: top-level keys that are fields of the stage,
    overridden by the stage's own section (``train: {...}``). Unknown top-level keys are ignored only
    if they belong to another stage or are section names; anything else is an error."""
    cls = STAGE_CONFIGS[stage]
    names = {f.name for f in dataclasses.fields(cls)}
    known = set(STAGE_CONFIGS) | {"run"} | {f.name for c in STAGE_CONFIGS.values() for f in dataclasses.fields(c)}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; see `covertune {stage} --help`")
    # "data" is both a stage (its YAML section) and an option (the dataset): a mapping is the section
    out = {k: v for k, v in values.items() if k in names and not isinstance(v, dict)}
    sub = values.get(stage) if isinstance(values.get(stage), dict) else {}
    bad = sorted(k for k in sub if k not in names)
    if bad:
        raise ValueError(f"unknown option(s) {bad} in section '{stage}'; see `covertune {stage} --help`")
    out.update(sub)
    return out


def build(stage: str, *layers: dict) -> Any:
    """A stage config from layered mappings (later layers win), coerced to each field's type and
    validated (``validate``)."""
    cls = STAGE_CONFIGS[stage]
    values: dict = {}
    for layer in layers:
        values.update(section(layer, stage))
    hints = field_types(cls)
    cfg = cls(**{k: coerce(k, v, hints[k]) for k, v in values.items()})
    validate(cfg)
    cfg.given = frozenset(values)  # the options set by a layer, not defaulted (covertune.models.recipe reads them)
    return cfg


def field_types(cls) -> dict[str, Any]:
    """Each field's type, resolved (``Literal[...]`` for a choice option, ``list[str]``, ``int``...)."""
    return typing.get_type_hints(cls)


def type_name(kind) -> str:
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(choices(kind))
    if typing.get_origin(kind) is list:
        return "a list of " + type_name(typing.get_args(kind)[0])
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, str(kind))


def coerce(name: str, value: Any, kind) -> Any:
    """``value`` (from YAML, a flag or ``--set``) as the field type ``kind``; a ValueError naming the
    option otherwise. A choice option written as a YAML boolean (``padding_free: off``,
    ``eval_strategy: no``) is the choice it spells; a boolean is never a number (``lora_r: true``)."""
    origin = typing.get_origin(kind)
    if origin is list and isinstance(value, (str, list, tuple)):
        items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        return [coerce(name, v, typing.get_args(kind)[0]) for v in items]
    try:
        if origin is list:
            raise ValueError
        if origin is Literal:
            if isinstance(value, bool):
                spelled = [c for c in choices(kind) if c in (_YAML_TRUE if value else _YAML_FALSE)]
                if len(spelled) != 1:
                    raise ValueError
                value = spelled[0]
            if not isinstance(value, str):
                raise ValueError
            return check_choice(name, value, kind)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if not isinstance(value, bool) and value not in (0, 1):
                raise ValueError
            return bool(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(value, bool):  # text written as a YAML boolean: ambiguous (on? yes? true?)
            raise ValueError
        return "" if value is None else str(value)
    except (TypeError, ValueError, OverflowError):
        hint = "; quote it in YAML" if isinstance(value, bool) and kind is str else ""
        raise ValueError(f"option {name!r} expects {type_name(kind)}, got {value!r}{hint}") from None


def validate(cfg) -> None:
    """Check every value of a stage config against its field's type and range, in one place, before any
    model loads: a ValueError naming the first bad option and what it accepts."""
    check_fields(cfg, [f.name for f in dataclasses.fields(cfg)])
    check = _STAGE_CHECKS.get(type(cfg))
    if check is not None:
        check(cfg)


def check_fields(cfg, names) -> None:
    """The named fields of ``cfg`` checked against their declared type, choices and range (an option group's
    fields, covertune.config.groups, carry their range wherever they are used)."""
    hints = field_types(type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for name in names:
        f = fields[name]
        value, kind, meta = getattr(cfg, f.name), hints[f.name], f.metadata
        if typing.get_origin(kind) is Literal:
            check_choice(f.name, value, kind)
        elif typing.get_origin(kind) is list:
            inner = typing.get_args(kind)[0]
            if not isinstance(value, list):
                raise ValueError(f"option {f.name!r} expects {type_name(kind)}, got {value!r}")
            if typing.get_origin(inner) is Literal:
                for v in value:
                    check_choice(f.name, v, inner)
        elif kind in (int, float) and not isinstance(value, bool):
            if not isinstance(value, (int, float)):
                raise ValueError(f"option {f.name!r} expects {type_name(kind)}, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            _check_range(f.name, value, meta)


_BOUNDS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
           "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def _check_range(name: str, value, meta) -> None:
    """``value`` within the field's bounds (metadata ge, gt, le, lt)."""
    bounds = {k: meta[k] for k in _BOUNDS if k in meta}
    if not all(_BOUNDS[k][1](value, b) for k, b in bounds.items()):
        wanted = " and ".join(f"{_BOUNDS[k][0]} {_number(b)}" for k, b in bounds.items())
        raise ValueError(f"{name} must be {wanted}, got {_number(value)}")


def _number(x) -> str:
    """An integer in full (a seed's 4294967295), any other number short (0.001, 1e-05)."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _check_train(cfg: TrainConfig) -> None:
    if cfg.max_steps <= 0 and cfg.epochs <= 0:
        raise ValueError("set epochs > 0 or max_steps > 0")
    if cfg.distributed == "fsdp":
        if cfg.quantization == "int8":
            raise ValueError("distributed fsdp shards a 4-bit (nf4) or unquantized base; an int8 base cannot be "
                             "sharded: use --quantization nf4, or --distributed ddp")
        if cfg.fp32_upcast:
            raise ValueError("distributed fsdp needs every frozen weight in one dtype; --fp32-upcast casts norms and "
                             "embeddings to fp32: drop it (--no-fp32-upcast)")
        if cfg.compute_dtype in ("fp16", "fp32"):
            raise ValueError(f"distributed fsdp trains in bf16 (the 4-bit weights are stored in it); got "
                             f"compute_dtype {cfg.compute_dtype}: use --compute-dtype bf16 or auto")
        if cfg.torch_compile:
            raise ValueError("distributed fsdp with --torch-compile is not supported by covertune; drop one")
        if cfg.select_checkpoint != "last":
            raise ValueError(f"distributed fsdp keeps sharded checkpoints, which cannot be scored or copied into the "
                             f"adapter; select_checkpoint {cfg.select_checkpoint} needs --distributed ddp (or "
                             "select_checkpoint last)")
    if not cfg.target_modules:
        raise ValueError("target_modules must not be empty")
    weights = flag_weight_map(cfg.flag_weights)
    if weights and cfg.drop_flagged:
        raise ValueError("drop_flagged skips every flagged train row, so flag_weights would weigh none: use one of "
                         "them (drop_flags FLAG... skips only the flags you name)")
    both = sorted(set(weights) & set(cfg.drop_flags))
    if both:
        raise ValueError(f"flag(s) {', '.join(both)} both dropped (drop_flags) and weighted (flag_weights): "
                         "name each flag in one of them")
    if "all-linear" in cfg.target_modules and len(cfg.target_modules) > 1:
        raise ValueError("target_modules: 'all-linear' stands alone")
    if cfg.select_checkpoint != "last" and cfg.save_strategy == "no":
        raise ValueError(f"select_checkpoint {cfg.select_checkpoint} chooses among checkpoints: set save_strategy "
                         "to epoch or steps, or select_checkpoint last")
    if cfg.select_checkpoint == "loss" and (cfg.eval_strategy != cfg.save_strategy or (
            cfg.save_strategy == "steps" and cfg.eval_steps not in (0, cfg.save_steps))):
        raise ValueError("select_checkpoint loss needs the validation loss at every checkpoint: set eval_strategy "
                         "to save_strategy (and eval_steps to 0 or save_steps)")
    if cfg.early_stopping_patience and cfg.select_checkpoint == "last":
        raise ValueError("early_stopping_patience stops on the chosen checkpoint's criterion: set "
                         "select_checkpoint to loss, rouge_l or task, or early_stopping_patience to 0")
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    schedulers = [s.value for s in SchedulerType]
    if cfg.lr_scheduler not in schedulers:
        raise ValueError(f"lr_scheduler must be one of transformers' schedules ({', '.join(schedulers)}); "
                         f"got {cfg.lr_scheduler!r}")
    optimizers = ["auto"] + [o.value for o in OptimizerNames]
    if cfg.optimizer not in optimizers:
        raise ValueError(f"optimizer must be auto or a transformers optim name (adamw_torch, "
                         f"paged_adamw_32bit, adafactor...); got {cfg.optimizer!r}")


def flag_weight_map(entries: list[str]) -> dict[str, float]:
    """train's ``flag_weights`` (``["ungrounded=0.3", "generic=0.5"]``) as {flag: weight}; a one-line
    ValueError naming the option for an entry that is not FLAG=W, a W outside [0, 1], a flag the data stage
    never sets (covertune.core.records.FLAG_NAMES) or a flag named twice."""
    weights: dict[str, float] = {}
    for entry in entries:
        flag, sep, text = str(entry).partition("=")
        flag = flag.strip()
        try:
            weight = float(text)
        except ValueError:
            weight = None
        if not sep or not flag or weight is None:
            raise ValueError(f"flag_weights: {entry!r} is not FLAG=W (e.g. ungrounded=0.3, W a number in [0, 1])")
        if flag not in FLAG_NAMES:
            raise ValueError(f"flag_weights: unknown flag {flag!r}; flags are {', '.join(FLAG_NAMES)}")
        if not 0 <= weight <= 1:  # also refuses nan
            raise ValueError(f"flag_weights: the weight of {flag} must be in [0, 1], got {text.strip()} "
                             "(0 ignores those rows' loss, 1 counts it fully)")
        if flag in weights:
            raise ValueError(f"flag_weights names {flag} twice: give each flag one weight")
        weights[flag] = weight
    return weights


def _check_generate(cfg: GenerateConfig) -> None:
    if not cfg.models:
        raise ValueError(f"models must be a non-empty subset of {', '.join(choices(ModelName))}")
    if len(set(cfg.models)) != len(cfg.models):
        raise ValueError(f"models lists a model twice: {cfg.models}")
    check_decoding(cfg)


def _check_prefer(cfg: PreferConfig) -> None:
    from transformers.trainer_utils import SchedulerType

    schedulers = [s.value for s in SchedulerType]
    if cfg.lr_scheduler not in schedulers:
        raise ValueError(f"lr_scheduler must be one of transformers' schedules ({', '.join(schedulers)}); "
                         f"got {cfg.lr_scheduler!r}")


_STAGE_CHECKS = {TrainConfig: _check_train, GenerateConfig: _check_generate, PreferConfig: _check_prefer,
                 WriteConfig: check_decoding}


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
