"""A run's recipe: the decoding its fine-tuned letters were written (and measured) with.

``covertune generate`` records it in ``<out>/recipe.json`` (``rundir.recipe_path``) when it writes the
fine-tuned letters; a shipped model carries one in its folder (covertune.models.shipped). ``covertune write`` and
``covertune serve`` then default to it: an option the command line, a YAML file or a preset sets wins, and
one left at its default takes the recipe's value (``apply_recipe``), so a served letter is written as the
measured letters were. A recipe's form ``auto`` (generate's default, which keeps the test split comparable
with the reference) leaves write's and serve's own default form, full; a run measured with full or body
serves that form.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from pathlib import Path

from covertune.core import io, rundir
from covertune.config.build import coerce, field_types

log = logging.getLogger(__name__)

# the decoding a recipe holds (the options of generate, write and serve of these names)
RECIPE_FIELDS = ("candidates", "select", "candidate_temperature", "candidate_top_p", "top_k", "repetition_penalty",
                 "select_repetition_weight", "select_skills_weight", "seed", "max_new_tokens", "form", "prompt_format")


def recipe_of(cfg, prompt_format: str) -> dict:
    """The recipe of a generate config whose fine-tuned prompts were encoded in ``prompt_format``."""
    recipe = {k: getattr(cfg, k) for k in RECIPE_FIELDS}
    recipe["prompt_format"] = prompt_format
    return recipe


def write_recipe(out, cfg, prompt_format: str) -> Path:
    """``<out>/recipe.json`` for the fine-tuned letters generate just wrote (atomically)."""
    recipe = {**recipe_of(cfg, prompt_format), "split": cfg.split, "written_by": "covertune generate"}
    return io.write_json(rundir.recipe_path(out), recipe)


def read_recipe(folder) -> dict:
    """The recipe in ``folder`` (its recipe.json), checked: {} where there is none. The decoding options are
    read at the top level (as generate writes them) or under "decoding" (as a shipped model's recipe holds
    them); other keys (the base model, the split, the training) are left out; a bad value is a one-line
    error naming the file and the option."""
    path = rundir.recipe_path(folder)
    data = rundir.read_json_file(path, "run `covertune generate` again or delete it")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value")
    if isinstance(data.get("decoding"), dict):
        data = {**data, **data["decoding"]}
    from covertune.config.stages import GenerateConfig

    kinds = field_types(GenerateConfig)
    recipe = {}
    for k in RECIPE_FIELDS:
        if k in data:
            try:
                recipe[k] = coerce(k, data[k], kinds[k])
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
    return recipe


def given(cfg) -> frozenset[str]:
    """The options of ``cfg`` that were set rather than defaulted: those its layers named (``config.build``
    records them), else those that differ from the dataclass default."""
    named = getattr(cfg, "given", None)
    if named is not None:
        return frozenset(named)
    out = set()
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if getattr(cfg, f.name) != default:
            out.add(f.name)
    return frozenset(out)


def apply_recipe(cfg, recipe: dict, source: str) -> dict:
    """Set the options of ``cfg`` left at their defaults to ``recipe``'s values; the ones taken, returned."""
    kinds = field_types(type(cfg))
    explicit = given(cfg)
    if recipe.get("form") == "auto":  # generate's default, kept for the test split: the command's own default
        recipe = {k: v for k, v in recipe.items() if k != "form"}
    taken = {k: v for k, v in recipe.items() if k in kinds and k not in explicit}
    for k, v in taken.items():
        setattr(cfg, k, coerce(k, v, kinds[k]))
    if taken:
        log.info("decoding from %s: %s", source, ", ".join(f"{k}={v}" for k, v in taken.items()))
    return taken


SOURCE_OPTIONS = ("model", "out", "adapter", "merged")  # what names the model write and serve load


def resolve_letter_model(cfg) -> dict:
    """For write and serve: with no model named (none of --model/--out/--adapter/--merged), the shipped
    default model (covertune.models.shipped) on its base, else the base model alone; then the recipe of the
    model loaded (the shipped model's, ``<out>/recipe.json``, or an adapter folder's) for the options left
    at their defaults. Returns the options taken from the recipe."""
    from covertune.models.shipped import DEFAULT_MODEL, default_model_dir, shipped_model_dir

    folder = None
    if not (set(SOURCE_OPTIONS) & given(cfg)) and not (cfg.out or cfg.adapter or cfg.merged):
        folder = default_model_dir()
        if folder is None:
            log.warning("no shipped model at %s: writing with the base model %s alone",
                        shipped_model_dir(DEFAULT_MODEL), cfg.model)
        else:
            cfg.adapter = str(folder)
            log.info("the shipped model %s (%s)", DEFAULT_MODEL, folder)
    elif cfg.out and not cfg.adapter and not cfg.merged:
        folder = Path(cfg.out).expanduser()
    elif cfg.adapter:
        folder = Path(cfg.adapter).expanduser()
    if folder is None:
        return {}
    return apply_recipe(cfg, read_recipe(folder), str(rundir.recipe_path(folder)))


def end_token_ids(folder) -> list[int]:
    """The token ids a model's letters end with besides its tokenizer's EOS, as the recipe in ``folder``
    records them (``end_of_letter_token``: {"token", "id"}). The shipped smol adapter was trained where
    transformers converted the embedded GGUF with ``<|im_start|>`` as its end token, so its letters end
    with that token, not with the ``<|im_end|>`` a newer transformers reads from the same file."""
    path = rundir.recipe_path(folder) if folder else None
    if path is None or not path.is_file():
        return []
    try:
        end = json.loads(path.read_text(encoding="utf-8")).get("end_of_letter_token")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return []  # read_recipe names a broken file when the recipe is applied
    token = end.get("id") if isinstance(end, dict) else None
    return [token] if isinstance(token, int) and token >= 0 else []


def add_end_tokens(model, folder) -> None:
    """Adds ``end_token_ids(folder)`` to ``model``'s generation_config EOS ids (its stop tokens)."""
    extra = end_token_ids(folder)
    gen = getattr(model, "generation_config", None)
    if not extra or gen is None:
        return
    eos = gen.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    gen.eos_token_id = sorted({*eos, *extra})


@contextlib.contextmanager
def end_tokens_added(model, folder):
    """``add_end_tokens`` while the block runs, the model's own EOS ids back afterwards (a base model that
    writes the fine-tuned pass through an adapter, then the base pass)."""
    gen = getattr(model, "generation_config", None)
    saved = getattr(gen, "eos_token_id", None)
    add_end_tokens(model, folder)
    try:
        yield
    finally:
        if gen is not None:
            gen.eos_token_id = saved
