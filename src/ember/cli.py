"""The `ember` command. Expected failures (EmberError) print one line and exit 2."""

import argparse
import sys

from ember.errors import EmberError

COMMANDS = {
    "train": "compose a config, train, validate, test, write a run directory",
    "eval": "evaluate a run's best checkpoint: ember eval run=DIR [data.split=test]",
    "config": "print the composed config",
    "models": "list the registered models",
}

OVERRIDES_HELP = """\
overrides:
  group=option          select a config group option          model=mlp
  group.key=value       set a key                             trainer.max_epochs=20
  +group.key=value      the same, Hydra's spelling for adding   +data.num_samples=8000
"""


def _groups_help() -> str:
    from ember.config import GROUPS, group_options

    lines = ["config groups (select with group=option):"]
    for group in GROUPS:
        lines.append(f"  {group:<11} {', '.join(group_options(group))}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    epilog = _groups_help() + "\n\n" + OVERRIDES_HELP + "\nexamples:\n  ember train\n  ember train model=mlp optim.lr=0.01 trainer.max_epochs=5\n  ember train experiment=linear_regression\n  ember eval run=runs/mnist1d-cnn1d/20260101-120000\n"
    parser = argparse.ArgumentParser(
        prog="ember",
        description="Train, tune, track and ship PyTorch models from one config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog,
    )
    from ember import __version__

    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", title="commands")
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        if name in ("train", "config", "eval"):
            p.add_argument("--config", metavar="FILE", help="a YAML file of config values; overrides on the command line win")
            p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see below)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMAND_FUNCS[args.command](args)
    except EmberError as e:
        print(f"{e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _train(args) -> int:
    from ember.api import compose_for_resume, train

    train(compose_for_resume(args.overrides, args.config))
    return 0


def _config(args) -> int:
    from omegaconf import OmegaConf

    from ember.config import compose

    print(OmegaConf.to_yaml(compose(args.overrides, args.config)), end="")
    return 0


def _eval(args) -> int:
    from ember.api import evaluate_run
    from ember.errors import ConfigError

    runs = [o.split("=", 1)[1] for o in args.overrides if o.startswith("run=")]
    if not runs:
        raise ConfigError("ember eval needs the run to evaluate: ember eval run=runs/<name>/<time>")
    rest = [o for o in args.overrides if not o.startswith("run=")]
    if args.config:
        from ember.config.compose import file_overrides

        rest = file_overrides(args.config) + rest
    evaluate_run(runs[-1], rest)
    return 0


def _models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ember.data.spec import DataSpec
    from ember.models import MODELS, count_parameters, create_model

    # Parameter counts at default size, for the data each model is usually trained on.
    signal = DataSpec(input_shape=(1, 40), task="classification", num_classes=10)
    scalar = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
    table = Table(title="models")
    for col in ("name", "params", "description"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for name in MODELS.names():
        try:
            params = f"{count_parameters(create_model(name, signal)):,}"
        except EmberError:
            params = f"{count_parameters(create_model(name, scalar)):,}"
        table.add_row(name, params, MODELS.describe(name))
    Console().print(table)
    return 0


COMMAND_FUNCS = {"train": _train, "eval": _eval, "config": _config, "models": _models}


if __name__ == "__main__":
    sys.exit(main())
