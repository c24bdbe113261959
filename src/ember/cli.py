"""The `ember` command. Expected failures (EmberError) print one line and exit 2.

Each command imports its module inside its own function: `ember runs` or `ember config` need not
import the trainer, Optuna or the exporters."""

import argparse
import os
import sys

from ember.errors import ConfigError, EmberError

COMMANDS = {
    "train": "compose a config, train, validate, test, write a run directory",
    "eval": "evaluate a run's best checkpoint beside its baselines: ember eval run=DIR [data.split=test] [rollout=N]",
    "config": "print the composed config",
    "models": "list the registered models",
    "summary": (
        "layers, output shapes, parameters, FLOPs and memory of a model: "
        "ember summary model=resnet data=digits [depth=2]"
    ),
    "graph": "render a model's autograd graph to SVG and PNG with Graphviz: ember graph model=mlp [out=PATH]",
    "sample": (
        "write a PNG grid of samples from a vae or diffusion run: ember sample run=DIR [n=16] [seed=0] [out=PATH]"
    ),
    "profile": "profile a few training steps: top operators, data-wait share, a Chrome trace in the run directory",
    "tune": (
        "hyperparameter search over any config keys (Optuna): ember tune tune.trials=50 tune.sampler=tpe [--status]"
    ),
    "export": (
        "export a run's model with a parity check: ember export run=DIR "
        "format=torchscript|onnx|exported|safetensors [batch=dynamic]"
    ),
    "predict": "predict a file with a run or an exported model: ember predict run=DIR input=FILE [output=FILE]",
    "bench": "inference latency and throughput per backend and batch size: ember bench run=DIR [batch_sizes=1,8,64]",
    "compress": (
        "int8 quantization or magnitude pruning into a new run: "
        "ember compress run=DIR method=dynamic_int8|prune [sparsity=0.5]"
    ),
    "runs": (
        "a table of the runs under DIR (default runs): status, best validation and test metric, time: "
        "ember runs [DIR] [--sort METRIC] [--json]"
    ),
    "report": "one self-contained HTML page of a run, or a comparison of several: ember report RUN [RUN ...] [-o FILE]",
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


class _Parser(argparse.ArgumentParser):
    """argparse, with its mistakes (`--steps abc`) one line like every other error, not usage + error."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    epilog = (
        _groups_help()
        + "\n\n"
        + OVERRIDES_HELP
        + "\nexamples:\n  ember train\n  ember train model=mlp optim.lr=0.01 trainer.max_epochs=5\n"
        "  ember train experiment=linear_regression\n  ember eval run=runs/mnist1d-cnn1d/20260101-120000\n"
    )
    parser = _Parser(
        prog="ember",
        description="Train, tune, track and ship PyTorch models from one config.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog,
    )
    from ember import __version__

    parser.add_argument("--version", action="version", version=f"ember {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", title="commands")
    for name, text in COMMANDS.items():
        p = sub.add_parser(
            name, help=text, description=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _add_arguments(name, p)
    return parser


def _add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments of the command `name` beside its key=value overrides."""
    if name in ("train", "config", "eval", "summary", "graph", "profile", "tune"):
        p.add_argument(
            "--config", metavar="FILE", help="a YAML file of config values; overrides on the command line win"
        )
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (see below)")
    if name == "profile":
        p.add_argument("--steps", type=int, default=10, help="profiled optimizer steps (default 10)")
        p.add_argument("--warmup", type=int, default=5, help="steps before profiling starts (default 5)")
    if name == "tune":
        p.add_argument(
            "--status",
            action="store_true",
            help="report on the study (leaderboard, best.yaml) without running trials",
        )
    if name == "sample":
        p.add_argument("overrides", nargs="*", metavar="key=value", help="run=DIR, n=, seed=, out=")
    if name == "runs":
        p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="where the runs are (default runs)")
        p.add_argument(
            "--sort",
            metavar="METRIC",
            help=(
                "a metric such as val/loss or test/accuracy (best first), or started, duration, status, model, data"
            ),
        )
        p.add_argument("--json", action="store_true", help="every run with every metric as JSON, for scripts")
    if name == "report":
        p.add_argument("runs", nargs="+", metavar="RUN", help="run directories; two or more are compared")
        p.add_argument(
            "-o",
            "--out",
            metavar="FILE",
            help="where to write (default RUN/report.html for one run, ./report.html for several)",
        )
        p.add_argument(
            "--no-eval",
            action="store_true",
            help="skip evaluating the best checkpoint (no confusion matrix or scatter)",
        )
    if name in SHIP_COMMANDS:
        p.add_argument("overrides", nargs="*", metavar="key=value", help=SHIP_COMMANDS[name])


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker ends here with its run recorded and its process group destroyed. A
        # gloo thread can still release a tensor while the interpreter shuts down, which aborts
        # the process ("terminate called without an active exception", SIGABRT; seen once in
        # about 15 two-rank FSDP runs here) and makes torchrun report a finished run as failed.
        # So a worker leaves without the interpreter's shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
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


def _profile(args) -> int:
    from ember.config import compose
    from ember.inspection.profile import profile_run
    from ember.ranges import AT_LEAST_1, NON_NEGATIVE, check_value
    from ember.track.console import Console

    check_value("--steps", args.steps, AT_LEAST_1)
    check_value("--warmup", args.warmup, NON_NEGATIVE)
    profile_run(compose(args.overrides, args.config), Console("lines"), warmup=args.warmup, steps=args.steps)
    return 0


def _train(args) -> int:
    from ember.api import compose_for_resume, train

    cfg, conf = compose_for_resume(args.overrides, args.config)
    if cfg.trainer.devices > 1 and "WORLD_SIZE" not in os.environ:
        # trainer.devices=N: the same command in N local processes, started by torchrun itself.
        import subprocess

        config = ["--config", args.config] if args.config else []
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={cfg.trainer.devices}",
            "-m",
            "ember",
            "train",
            *config,
            *args.overrides,
        ]
        return subprocess.call(cmd)
    train(cfg, conf=conf)
    return 0


def _config(args) -> int:
    from omegaconf import OmegaConf

    from ember.config import compose

    print(OmegaConf.to_yaml(compose(args.overrides, args.config)), end="")
    return 0


def _eval(args) -> int:
    from ember.config.compose import file_overrides
    from ember.inspection.evaluation import evaluate_run
    from ember.options import parse_options

    # The command's own options as every command's (ember.options); the rest are config overrides.
    options, rest = parse_options("eval", args.overrides, {"run": None, "rollout": None}, rest_ok=True)
    if options["run"] is None:
        raise ConfigError("ember eval needs the run to evaluate: ember eval run=runs/<name>/<time>")
    steps = options["rollout"]
    if steps is not None and (not steps.strip().isdigit() or int(steps) < 1):
        raise ConfigError(f"rollout={steps!r} must be a whole number of steps, for example rollout=10")
    rest = (file_overrides(args.config) if args.config else []) + rest
    evaluate_run(options["run"], rest, rollout=int(steps) if steps else 0)
    return 0


def _models(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ember.models import MODELS, brings_own_loss, count_parameters, create_model, example_spec

    # Parameter counts at default size, on the kind of data each model is meant for.
    table = Table(title="models")
    for col in ("name", "params", "data", "description"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for name in MODELS.names():
        spec = example_spec(name)
        model = create_model(name, spec)
        shape = "x".join(map(str, spec.input_shape))
        target = (
            f"{spec.num_classes} classes" if spec.task == "classification" else "x".join(map(str, spec.target_shape))
        )
        data = f"{shape} (generative)" if brings_own_loss(model) else f"{shape} -> {target}"
        table.add_row(name, f"{count_parameters(model):,}", data, MODELS.describe(name))
    Console().print(table)
    return 0


def _summary(args) -> int:
    from ember.inspection.model_summary import summary_command

    return summary_command(args.overrides, args.config)


def _graph(args) -> int:
    from ember.inspection.graph import graph_command

    return graph_command(args.overrides, args.config)


def _tune(args) -> int:
    from ember.tune import tune_command

    return tune_command(args.overrides, args.config, status=args.status)


def _sample(args) -> int:
    from ember.inspection.sample import sample_command

    return sample_command(args.overrides)


# export, predict, bench, compress: options they take; the commands live in ember.deploy.
SHIP_COMMANDS = {
    "export": "run=DIR format=torchscript|onnx|exported|safetensors, batch=dynamic|N, out=PATH, atol=, rtol=, samples=",
    "predict": (
        "run=DIR (or an exported file), input=FILE|FOLDER|NetCDF|Zarr, output=FILE (.csv, .npy, .npz, .json; .nc, "
        ".zarr for NetCDF or Zarr input), batch_size=, chunk=N time steps, trust=true (a TorchScript or AOTInductor "
        "file not exported by you)"
    ),
    "bench": (
        "run=DIR (or model=... data=...), batch_sizes=1,8,64, backends=eager,compile,torchscript,onnxruntime, iters=, "
        "warmup=, seconds=, threads=, out="
    ),
    "compress": (
        "run=DIR, method=dynamic_int8|prune, sparsity=0.5, epochs=1, out=DIR, config overrides for the fine-tuning"
    ),
}


def _ship(args) -> int:
    import importlib

    module = importlib.import_module(f"ember.deploy.{args.command}")
    return getattr(module, f"{args.command}_command")(args.overrides)


def _runs(args) -> int:
    from ember.report.runs import runs_command

    return runs_command(args)


def _report(args) -> int:
    from ember.report import report_command

    return report_command(args)


COMMAND_FUNCS = {
    "runs": _runs,
    "report": _report,
    "profile": _profile,
    "train": _train,
    "eval": _eval,
    "config": _config,
    "models": _models,
    "summary": _summary,
    "graph": _graph,
    "sample": _sample,
    "tune": _tune,
}
COMMAND_FUNCS.update({name: _ship for name in SHIP_COMMANDS})


if __name__ == "__main__":
    sys.exit(main())
