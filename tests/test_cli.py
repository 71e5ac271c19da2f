"""The command line: every stage of the registry is a subcommand, every option's help says what it accepts
and its default, and a bad decoding option is one line naming it, before any model (or torch) loads."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from covertune import cli, registry
from covertune.config.build import field_types, type_name
from covertune.config.options import choices

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY_UNUSED = ("bitsandbytes", "peft", "trl", "datasets")


def run_python(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def subcommands() -> dict:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    return sub.choices


def test_help_lists_every_registry_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if re.match(r"    \S", line)}
    assert {s.name for s in registry.STAGES} <= listed
    assert set(subcommands()) == {s.name for s in registry.STAGES} | {"presets", "models"}


@pytest.mark.parametrize("stage", sorted(registry.stage_configs()))
def test_every_option_help_shows_its_type_and_default(stage):
    cls = registry.stage(stage).config
    kinds = field_types(cls)
    actions = {a.dest: a for a in subcommands()[stage]._actions}
    for f in dataclasses.fields(cls):
        action = actions[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert type_name(kinds[f.name]) in action.help, (stage, f.name, action.help)
        if not f.metadata.get("positional"):
            assert f"default: {default!r}" in action.help.replace("%%", "%"), (stage, f.name, action.help)
        item = typing_item(kinds[f.name])
        if item is not None:
            assert tuple(action.choices) == choices(item), (stage, f.name)
        for bound in ("ge", "gt", "le", "lt"):
            if bound in f.metadata:
                assert f"{cli.RANGE_SIGNS[bound]} {f.metadata[bound]}" in action.help, (stage, f.name, action.help)


def typing_item(kind):
    """The Literal type of a choice option (or of a list of choices), else None."""
    import typing

    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    return kind if typing.get_origin(kind) is typing.Literal else None


@pytest.mark.parametrize("argv, message", [
    (["write", "--job-title", "Data Analyst", "--top-p", "5", "--do-sample"], "top_p must be > 0 and <= 1, got 5"),
    (["write", "--job-title", "Data Analyst", "--seed", "-1"], "seed must be >= 0 and <= 4294967295, got -1"),
])
def test_write_refuses_an_out_of_range_decoding_option_before_loading(argv, message):
    """One line naming the option, exit status 2, and neither torch nor a model was loaded."""
    proc = run_python("import sys, json; from covertune.cli import main; code = main(%r); "
                      "print(json.dumps([code, 'torch' in sys.modules]))" % (argv,), timeout=120)
    code, torch_loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 2 and not torch_loaded
    assert proc.stderr.strip().splitlines() == [f"covertune write: error: {message}"]


def test_help_imports_no_stage_and_no_heavy_library():
    proc = run_python("import sys, contextlib, io\nfrom covertune.cli import main\n"
                      "with contextlib.redirect_stdout(io.StringIO()):\n"
                      "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                      "('torch', 'transformers', 'bitsandbytes', 'peft', 'trl', 'datasets') "
                      "or m.startswith('covertune.stages')))", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_write_on_the_embedded_model_imports_no_unused_heavy_library():
    """``covertune write`` with the embedded model and no adapter loads neither bitsandbytes, peft, trl nor
    datasets (each costs start-up time and memory, and bitsandbytes may not even import here)."""
    argv = ["write", "--model", "embedded", "--engine", "torch", "--job-title", "Data Analyst", "--hiring-company",
            "Acme", "--applicant-name", "Ann Lee", "--max-new-tokens", "4"]
    proc = run_python("import sys, json; from covertune.cli import main; code = main(%r); "
                      "print(json.dumps([code, sorted(m for m in %r if m in sys.modules)]))" % (argv, HEAVY_UNUSED))
    code, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0, proc.stderr
    assert loaded == []
