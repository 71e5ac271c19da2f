"""covertune.models.recipe: a recipe read and checked, applied to the options left at their defaults, and said so
in --help."""

from __future__ import annotations

import json

import pytest

from covertune.cli import build_parser
from covertune.config.stages import ServeConfig, WriteConfig
from covertune.config.build import build
from covertune.models.recipe import apply_recipe, given, read_recipe

RECIPE = {"candidates": 16, "select": "grounded-mbr", "candidate_temperature": 0.7, "candidate_top_p": 0.95,
          "seed": 3, "max_new_tokens": 512, "prompt_format": "raw", "base_model": "embedded"}


def test_read_recipe(tmp_path):
    assert read_recipe(tmp_path) == {}
    (tmp_path / "recipe.json").write_text(json.dumps(RECIPE))
    assert read_recipe(tmp_path) == {k: v for k, v in RECIPE.items() if k != "base_model"}
    (tmp_path / "recipe.json").write_text(json.dumps({**RECIPE, "candidates": "many"}))
    with pytest.raises(ValueError, match="recipe.json: option 'candidates' expects an integer"):
        read_recipe(tmp_path)
    (tmp_path / "recipe.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_recipe(tmp_path)


def test_a_shipped_recipe_holds_its_decoding_in_a_section(tmp_path):
    """As scripts/ship_model.py writes it: the model, then the decoding under "decoding", the training apart."""
    (tmp_path / "recipe.json").write_text(json.dumps({"model": "embedded", "decoding": {
        "candidates": 16, "select": "grounded-mbr", "seed": 42, "dtype": "auto"}, "training": {"seed": 1}}))
    assert read_recipe(tmp_path) == {"candidates": 16, "select": "grounded-mbr", "seed": 42}


def test_explicit_options_win():
    cfg = build("write", {"candidates": 2, "out": "runs/x"})
    assert given(cfg) == {"candidates", "out"}
    taken = apply_recipe(cfg, {**read_recipe_of(RECIPE), "form": "body"}, "test")
    assert cfg.candidates == 2 and "candidates" not in taken
    assert (cfg.seed, cfg.max_new_tokens, cfg.form) == (3, 512, "body")
    # a recipe measured in form auto (generate's default) leaves write's own default, full
    cfg = build("serve", {})
    apply_recipe(cfg, {**read_recipe_of(RECIPE), "form": "auto"}, "test")
    assert cfg.form == "full" and cfg.candidates == 16
    # a dataclass built directly: the options that differ from the defaults count as set
    assert given(WriteConfig(seed=5)) == {"seed"} and given(ServeConfig()) == frozenset()


def read_recipe_of(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k != "base_model"}


def test_help_names_the_recipe_default(capsys):
    parser = build_parser()
    for stage in ("write", "serve"):
        with pytest.raises(SystemExit):
            parser.parse_args([stage, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "default: 1, or the recipe of the run or shipped model loaded" in text  # --candidates
        assert "default: 'full', or the recipe of the run or shipped model loaded" in text  # --form
        assert "default: 'embedded'; with none of --model/--out/--adapter/--merged, the shipped model" in text
