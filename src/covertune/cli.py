"""The command line: flags, YAML files and presets -> a stage config -> the stage function.

The subcommands come from the stage table (covertune.registry) and their flags from the stage config
dataclasses (covertune.config.stages), so every option is documented with its default in
``covertune <stage> --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing

from covertune import __version__, registry
from covertune.config.build import STAGE_CONFIGS, build, field_types, load_preset, load_yaml, preset_names, type_name
from covertune.config.options import choices
from covertune.core import distributed
from covertune.core.library_logs import quiet_library_logs
from covertune.core.progress import quiet_library_bars



RANGE_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _default_text(stage: str, name: str, default) -> str:
    """How --help states a default: write's and serve's decoding options default to the recipe of the model
    they load (covertune.models.recipe), and with no model named they load the shipped one (covertune.models.shipped)."""
    from covertune.models.recipe import RECIPE_FIELDS, SOURCE_OPTIONS

    if stage in ("write", "serve") and name in RECIPE_FIELDS:
        return f"default: {default!r}, or the recipe of the run or shipped model loaded"
    if stage in ("write", "serve") and name in SOURCE_OPTIONS:
        return (f"default: {default!r}; with none of --model/--out/--adapter/--merged, the shipped model "
                "(`covertune models`)")
    return f"default: {default!r}"


def _add_field(parser: argparse.ArgumentParser, f: dataclasses.Field, kind, stage: str = "") -> None:
    """A flag for a config field: --x/--no-x for a bool, a value (checked against the field's choices
    for a choice option) otherwise; values are coerced and validated by config.build."""
    flag = "--" + f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    bounds = " and ".join(f"{sign} {f.metadata[k]}" for k, sign in RANGE_SIGNS.items() if k in f.metadata)
    accepts = type_name(kind) + (f" {bounds}" if bounds else "")  # "an integer >= 1", "one of raw, chat"
    help_text = f"{f.metadata.get('help', '')} ({accepts}; {_default_text(stage, f.name, default)})".replace("%", "%%")
    if f.metadata.get("positional") and typing.get_origin(kind) is typing.Literal:  # one word of a few
        parser.add_argument(f.name, choices=choices(kind), help=f"{f.metadata.get('help', '')} ({accepts})")
        return
    if f.metadata.get("positional"):
        parser.add_argument(f.name, nargs="+", metavar=f.name.upper().rstrip("S") + "_DIR",
                            help=f"{f.metadata.get('help', '')} ({accepts})")
        return
    if kind is bool:
        parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS, help=help_text)
        return
    many = typing.get_origin(kind) is list
    item = typing.get_args(kind)[0] if many else kind
    values = choices(item) if typing.get_origin(item) is typing.Literal else None
    parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=help_text, choices=values,
                        nargs="+" if many else None, metavar=("VALUE" if many and not values else None))


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of options (flat, or one section per stage)")
    parser.add_argument("--preset", help=f"named preset: {', '.join(preset_names())}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covertune",
        description="Fine-tune an instruction-tuned LM with QLoRA to write grounded cover letters, "
                    "and measure how much better it got.",
    )
    parser.add_argument("--version", action="version", version=f"covertune {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for stage, cls in STAGE_CONFIGS.items():
        help_text = registry.stage(stage).help
        p = sub.add_parser(stage, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_common(p)
        kinds = field_types(cls)
        for f in dataclasses.fields(cls):
            _add_field(p, f, kinds[f.name], stage)
        if registry.stage(stage).distributed:
            p.add_argument("--num-gpus", type=int, default=None, metavar="N",
                           help="run in N processes, one per GPU, through torch.distributed.run (the same as "
                                "`torchrun --standalone --nproc-per-node N -m covertune " + stage + " ...`)")
    run = registry.stage("run")
    p = sub.add_parser("run", help=run.help, description=run.help)
    _add_common(p)
    p.add_argument("--out", help="run directory (default: the preset's, else runs/default)")
    p.add_argument("--data", help="dataset (see `covertune data --help`)")
    p.add_argument("--model", help="base model for train, merge and generate (its tokenizer also counts "
                   "prompt tokens in data)")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=None,
                   help="merge the adapter and generate from the merged model")
    p.add_argument("--prefer", action=argparse.BooleanOptionalAction, default=None,
                   help="run the prefer stage after train (also: a prefer section in the YAML file or preset); "
                        "merge and generate then use <out>/preference_adapter")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                   help="override one stage option, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--num-gpus", type=int, default=None, metavar="N",
                   help="train and generate in N processes, one per GPU (torch.distributed.run); the other "
                        "stages in one")
    sub.add_parser("presets", help="list the named presets and what they set")
    sub.add_parser("models", help="list the fine-tuned models that ship with covertune (write and serve use the "
                   "default one when no model is named)")
    return parser


def _layers(args: argparse.Namespace) -> list[dict]:
    layers = []
    if args.preset:
        layers.append(load_preset(args.preset))
    if args.config:
        layers.append(load_yaml(args.config))
    return layers


def stage_config(args: argparse.Namespace):
    """The config of ``covertune <stage>``: its preset, then its YAML file, then its flags."""
    skip = {"stage", "config", "preset", "verbose", "num_gpus"}
    flags = {k: v for k, v in vars(args).items() if k not in skip}
    return build(args.stage, *_layers(args), flags)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet_library_bars()
    quiet_library_logs()
    distributed.quiet_other_processes()
    if args.stage is None:
        parser.print_help()
        return 0
    try:
        if distributed.is_distributed() and args.stage not in registry.distributed_stages():
            raise ValueError(f"this is one of {distributed.world_size()} processes started by a launcher, and "
                             f"covertune {args.stage} runs in one; launch only "
                             f"{' and '.join(registry.distributed_stages())} with torchrun / accelerate launch")
        if args.stage != "run" and getattr(args, "num_gpus", None) is not None:
            registry.check_distributed(args.stage)
            distributed.check_num_gpus(args.num_gpus, args.stage)
            if args.num_gpus > 1:
                stage_config(args)  # a bad option is named here, before N processes start
                return distributed.relaunch(args.num_gpus, sys.argv[1:] if argv is None else argv)
        if args.stage == "presets":
            import yaml
            for name in preset_names():
                print(f"# {name}\n{yaml.safe_dump(load_preset(name), sort_keys=False)}")
            return 0
        if args.stage == "models":
            from covertune.models.catalog import models_text

            print(models_text())
            return 0
        if args.stage == "run":
            result = registry.stage("run").function()(args, _layers(args))
        else:
            cfg = stage_config(args)
            # a sweep layers each variant over the same preset/--config recipe
            run_stage = registry.stage(args.stage).function()
            result = run_stage(cfg, _layers(args)) if args.stage == "sweep" else run_stage(cfg)
        distributed.finish()
        if isinstance(result, str):
            print(result)
        return 0
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        if getattr(args, "verbose", False):
            raise
        print(f"covertune {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        given = sys.argv[1:] if argv is None else list(argv)
        if "--force" in given:  # --force would start over again: the command that continues drops it
            import shlex

            again = " ".join(shlex.quote(a) for a in ["covertune", *(a for a in given if a != "--force")])
            print(f"covertune {args.stage}: interrupted; to continue from where it stopped (train from its last "
                  f"checkpoint, generate from the letters it finished), run it without --force: {again}",
                  file=sys.stderr)
            return 130
        print(f"covertune {args.stage}: interrupted; run the same command again to continue (train goes on "
              "from its last checkpoint, generate from the letters it finished)", file=sys.stderr)
        return 130
