"""config: typed choice options, YAML booleans, validation in one place, and the layering of a stage's
options (dataclass default < preset < YAML < flags) for every stage and for `covertune run`."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from covertune import cli
from covertune.config.build import STAGE_CONFIGS, build, flag_weight_map, load_preset, load_yaml, validate
from covertune.config.stages import TrainConfig
from covertune.stages.pipeline import STAGES, pipeline_configs, run_layers


def write_yaml(tmp_path, text: str):
    path = tmp_path / "options.yaml"
    path.write_text(text)
    return path


def test_yaml_booleans_are_the_choices_they_spell(tmp_path):
    """YAML 1.1 reads on/off/no as booleans; for a choice option they mean the word."""
    path = write_yaml(tmp_path, "train:\n  padding_free: off\n  liger_kernel: on\n"
                                "  eval_strategy: no\n  save_strategy: no\n")
    assert yaml.safe_load(path.read_text())["train"]["padding_free"] is False  # the trap
    cfg = build("train", load_yaml(path))
    assert (cfg.padding_free, cfg.liger_kernel, cfg.eval_strategy, cfg.save_strategy) == ("off", "on", "no", "no")


@pytest.mark.parametrize("text, option", [
    ("lora_r: true", "lora_r"),  # a boolean is not a number (it used to become 1)
    ("train: {quantization: yes}", "quantization"),  # 'yes' is no quantization's name
    ("train: {loss_on: prompt}", "loss_on"),
    ("learning_rate: -1", "learning_rate"),
    ("lora_dropout: 5", "lora_dropout"),
    ("logging_steps: 0", "logging_steps"),
    ("epochs: .inf", "epochs"),
    ("epochs: .nan", "epochs"),
    ("batch_size: 0", "batch_size"),
    ("warmup_ratio: 1.5", "warmup_ratio"),
    ("max_length: 1", "max_length"),
    ("lr_scheduler: cosin", "lr_scheduler"),
    ("optimizer: adam", "optimizer"),
])
def test_bad_train_values_are_one_line_errors_naming_the_option(tmp_path, text, option):
    with pytest.raises(ValueError) as err:
        build("train", load_yaml(write_yaml(tmp_path, text)))
    message = str(err.value)
    assert option in message and "\n" not in message


@pytest.mark.parametrize("stage, values, option", [
    ("generate", {"models": ["base", "sft"]}, "models"),
    ("generate", {"split": "training"}, "split"),
    ("generate", {"top_p": 0}, "top_p"),
    ("generate", {"do_sample": True, "temperature": 0}, "temperature"),
    ("generate", {"prompt_format": "xml"}, "prompt_format"),
    ("merge", {"dtype": "int4"}, "dtype"),
    ("merge", {"base_weights": "nf4"}, "base_weights"),
    ("data", {"val_size": -0.1}, "val_size"),
    ("evaluate", {"bertscore_batch_size": 0}, "bertscore_batch_size"),
    ("report", {"examples": -1}, "examples"),
])
def test_bad_values_of_other_stages(stage, values, option):
    with pytest.raises(ValueError, match=option):
        build(stage, values)


def test_flag_weights_from_the_cli_yaml_and_set(tmp_path):
    """train --flag-weights FLAG=W ...; a YAML list or comma-separated text; `covertune run --set`."""
    args = cli.build_parser().parse_args(["train", "--flag-weights", "ungrounded=0.3", "generic=0.5"])
    assert cli.stage_config(args).flag_weights == ["ungrounded=0.3", "generic=0.5"]
    path = write_yaml(tmp_path, "train:\n  flag_weights: [ungrounded=0.3, too_short=0]\n")
    assert build("train", load_yaml(path)).flag_weights == ["ungrounded=0.3", "too_short=0"]
    assert build("train", {"flag_weights": "generic=0.5,ungrounded=1"}).flag_weights == ["generic=0.5", "ungrounded=1"]
    configs, _ = _run_configs(["--set", "train.flag_weights=ungrounded=0.25"])
    assert configs["train"].flag_weights == ["ungrounded=0.25"]
    assert flag_weight_map(["ungrounded=0.3", " generic = 1e-1", "too_short=0"]) == {
        "ungrounded": 0.3, "generic": 0.1, "too_short": 0.0}
    assert TrainConfig().flag_weights == [] and flag_weight_map([]) == {}


@pytest.mark.parametrize("values, message", [
    ({"flag_weights": ["ungrounded"]}, "flag_weights: 'ungrounded' is not FLAG=W"),
    ({"flag_weights": ["ungrounded=abc"]}, "flag_weights: 'ungrounded=abc' is not FLAG=W"),
    ({"flag_weights": ["=0.5"]}, "flag_weights: '=0.5' is not FLAG=W"),
    ({"flag_weights": ["ungrounded=1.5"]}, "the weight of ungrounded must be in [0, 1], got 1.5"),
    ({"flag_weights": ["generic=-0.1"]}, "the weight of generic must be in [0, 1], got -0.1"),
    ({"flag_weights": ["generic=nan"]}, "the weight of generic must be in [0, 1], got nan"),
    ({"flag_weights": ["grounded=0.5"]}, "flag_weights: unknown flag 'grounded'; flags are too_short, "),
    ({"flag_weights": ["generic=0.5", "generic=0.2"]}, "flag_weights names generic twice"),
    ({"flag_weights": ["generic=0.5", "ungrounded=0.2"], "drop_flags": ["ungrounded", "too_short"]},
     "flag(s) ungrounded both dropped (drop_flags) and weighted (flag_weights)"),
    ({"flag_weights": ["generic=0.5"], "drop_flagged": True}, "drop_flagged skips every flagged train row"),
])
def test_bad_flag_weights_are_one_line_errors(values, message):
    with pytest.raises(ValueError) as err:
        build("train", values)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_greedy_decoding_takes_temperature_zero():
    assert build("generate", {"temperature": 0}).temperature == 0.0


def test_validate_checks_configs_built_in_code():
    """A stage function validates the config it is given, whoever built it."""
    with pytest.raises(ValueError, match="lora_dropout must be >= 0 and < 1, got 5"):
        validate(TrainConfig(lora_dropout=5))
    with pytest.raises(ValueError, match="epochs must be a finite number"):
        validate(TrainConfig(epochs=float("inf")))
    validate(TrainConfig())  # the defaults are valid


def test_cli_rejects_a_bad_value_before_any_model_loads(tmp_path, capsys):
    """The run directory has no data and the model does not exist: the error is about the option,
    so nothing was read or loaded before it."""
    path = write_yaml(tmp_path, "learning_rate: -1\n")
    code = cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run"),
                     "--model", str(tmp_path / "no-such-model")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "covertune train: error: learning_rate must be >= 0, got -1"


def test_cli_choice_flags_list_their_values(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--padding-free", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


def _fields_that_differ(cfg) -> dict:
    default = type(cfg)()
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
            if getattr(cfg, f.name) != getattr(default, f.name)}


# one option per stage set at each layer: the preset's value, then the YAML's, then the flag's
LAYERS = {
    "data": ("val_size", "0.2", "0.3", "0.25"),
    "train": ("epochs", "2", "3", "5"),
    "merge": ("dtype", "bf16", "fp16", "fp32"),
    "generate": ("max_new_tokens", "100", "200", "300"),
    "evaluate": ("bertscore_batch_size", "8", "16", "4"),
    "report": ("title", "preset title", "yaml title", "flag title"),
}


@pytest.mark.parametrize("stage", sorted(LAYERS))
def test_layering_preset_yaml_flags_per_stage(stage, tmp_path, monkeypatch):
    name, in_preset, in_yaml, in_flag = LAYERS[stage]
    flag = "--" + name.replace("_", "-")
    monkeypatch.setattr(cli, "load_preset", lambda _: {stage: {name: yaml.safe_load(in_preset)}, "out": "runs/p"})
    config = write_yaml(tmp_path, f"{stage}:\n  {name}: {in_yaml}\n")
    parser = cli.build_parser()

    def cfg(argv):
        return cli.stage_config(parser.parse_args([stage, *argv]))

    kind = type(getattr(STAGE_CONFIGS[stage](), name))
    assert getattr(cfg(["--preset", "x"]), name) == kind(yaml.safe_load(in_preset))
    assert cfg(["--preset", "x"]).out == "runs/p"
    assert getattr(cfg(["--preset", "x", "--config", str(config)]), name) == kind(yaml.safe_load(in_yaml))
    both = cfg(["--preset", "x", "--config", str(config), flag, in_flag])
    assert getattr(both, name) == kind(in_flag)
    assert _fields_that_differ(both) == {name: kind(in_flag), "out": "runs/p"}


def _run_configs(argv: list[str]) -> tuple[dict, bool]:
    args = cli.build_parser().parse_args(["run", *argv])
    layers, merge = run_layers(args, cli._layers(args))
    return pipeline_configs(layers, merge=merge, force=args.force), merge


def test_run_config_sections_reach_every_stage(tmp_path):
    """Each stage's section of a `covertune run --config` file reaches that stage's config, the merge
    section included (it used to be dropped, the merge stage keeping dtype auto)."""
    text = "out: runs/mine\nmodel: embedded\n" + "".join(
        f"{stage}:\n  {name}: {in_yaml}\n" for stage, (name, _, in_yaml, _) in LAYERS.items())
    configs, merge = _run_configs(["--config", str(write_yaml(tmp_path, text))])
    assert merge  # a merge section turns the merge stage on
    assert configs["merge"].dtype == "fp16"
    for stage, (name, _, in_yaml, _) in LAYERS.items():
        value = getattr(configs[stage], name)
        assert value == type(value)(yaml.safe_load(in_yaml)), stage
        assert configs[stage].out == "runs/mine"
    assert configs["generate"].merged == "runs/mine/merged"


def test_run_layering_preset_yaml_set_flags(tmp_path):
    text = "train:\n  epochs: 3\nmerge:\n  dtype: fp16\n"
    config = str(write_yaml(tmp_path, text))
    configs, merge = _run_configs(["--preset", "demo", "--config", config])
    demo = load_preset("demo")
    assert configs["train"].epochs == 3 and configs["train"].lora_r == demo["train"]["lora_r"]
    assert configs["train"].out == demo["out"] and merge
    configs, _ = _run_configs(["--preset", "demo", "--config", config, "--set", "train.epochs=5",
                               "--set", "merge.dtype=bf16", "--out", "runs/flag"])
    assert configs["train"].epochs == 5 and configs["merge"].dtype == "bf16"
    assert {configs[s].out for s in STAGES if s in configs} == {"runs/flag"}


def test_run_merge_switch(tmp_path):
    assert _run_configs([])[1] is False
    assert _run_configs(["--config", str(write_yaml(tmp_path, "merge: true\n"))])[1] is True
    assert _run_configs(["--config", str(write_yaml(tmp_path, "merge: {dtype: fp16}\n")), "--no-merge"])[1] is False
    assert _run_configs(["--set", "merge=false"])[1] is False
