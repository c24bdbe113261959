"""A trained run read back from its directory: `load_run` (the model with its best weights, the
config, the DataSpec) and `evaluate_run` (`ember eval`: the best checkpoint on a split beside its
baselines, or a forecasting run rolled out with `rollout=N`)."""

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from ember import baselines
from ember.config import compose, typed
from ember.config.compose import config_as_overrides
from ember.data import Splits, build_data
from ember.data.spec import DataSpec
from ember.errors import CheckpointError, ConfigError, first_line
from ember.models import builder_kwargs, create_model
from ember.run import RunDir
from ember.track.console import Console
from ember.train import checkpoint
from ember.train.build import build_trainer
from ember.train.device import restored_torch_flags


class LoadedRun(tuple):
    """What `load_run` returns: the (model, config, spec) tuple, unpacked as before, which also
    knows its run directory and shows its metrics and curves in a notebook."""

    def __new__(cls, model: nn.Module, cfg: DictConfig, spec: DataSpec, path: Path):
        run = super().__new__(cls, (model, cfg, spec))
        run.path = Path(path)
        return run

    def _repr_html_(self) -> str:
        from ember.notebook import run_html

        summary = RunDir(self.path).summary()
        return run_html(f"{self[1].model.name} on {self[1].data.name}", summary.get("metrics") or {}, self.path)


def load_run(path: str | Path, which: str = "best") -> LoadedRun:
    """The model of a run with its `best` (or `last`) weights, its config and its DataSpec:
    `model, cfg, spec = ember.load_run("runs/...")`; in a notebook it shows its metrics."""
    run = RunDir.open(path)
    cfg, spec = run.config(), run.spec()
    if cfg.model.get("custom"):
        raise ConfigError(f"{run.path} trained a custom model ({cfg.model.name}); build it yourself and load {run.checkpoints / (which + '.pt')}")
    model = create_model(cfg.model.name, spec, **builder_kwargs(cfg.model))
    path = run.checkpoints / f"{which}.pt"
    if which == "best" and not path.exists():  # a run without validation keeps no best: its last is it
        path = run.checkpoints / "last.pt"
    try:
        model.load_state_dict(checkpoint.load(path)["model"])
    except (RuntimeError, KeyError, TypeError) as e:  # another model's weights, or not a checkpoint's content
        raise CheckpointError(f"{str(path)!r} does not fit the run's model {cfg.model.name} ({first_line(e)}); it belongs to another run: restore this run's checkpoint, or train it again") from None
    return LoadedRun(model, cfg, spec, run.path)


def evaluate_run(path: str | Path, overrides: list[str] = (), console: Console | None = None, rollout: int = 0) -> dict[str, float]:
    """Evaluate a run's best checkpoint on `data.split` (default test) beside its baselines and
    print the metrics; with `rollout=N` (a forecasting run), roll it out N steps instead."""
    run = RunDir.open(path)
    model, cfg, spec = load_run(path)
    cfg = compose(config_as_overrides(cfg) + list(overrides))
    cfg.trainer.progress = "none"
    # In the run's own units: data with other settings (data.resolution=1024 for a model trained
    # at 256) would otherwise be standardized with its own train split's statistics.
    splits = build_data(cfg.data, stats_from=spec)
    spec = splits.spec  # the run's units, the data's shapes (its grid may be finer)
    split = cfg.data.split
    if splits.get(split) is None:
        raise ConfigError(f"this run's data has no {split} split; use data.split=train, val or test")
    console = console or Console("lines")
    if rollout:
        return _rollout(run, model, splits, spec, split, rollout, console)
    with restored_torch_flags():
        trainer = build_trainer(typed(cfg), model, splits, Console("none"))
        loader = {"train": trainer.train_loader, "val": trainer.val_loader, "test": trainer.test_loader}[split]
        metrics = {f"{split}/{k}": v for k, v in trainer.evaluate(loader).items()}
        base = {} if trainer.uses_loss_protocol else baselines.score(loader, spec, trainer.reference, trainer.device, trainer.to_device)
    base = {name: {f"{split}/{k}": v for k, v in m.items()} for name, m in base.items()}
    verdict = baselines.verdict(metrics, base, spec)
    if verdict and "skill" in verdict:
        metrics[f"{split}/skill"] = verdict["skill"]
    baselines.show(console, f"{run.path}: best checkpoint", metrics, base, verdict, spec)
    return metrics


def _rollout(run: RunDir, model: nn.Module, splits: Splits, spec: DataSpec, split: str, steps: int, console: Console) -> dict[str, float]:
    """Roll a forecasting run out `steps` times; print the scores and keep them in rollout.json."""
    from ember import rollout

    result = rollout.rollout(model, splits, spec, split, steps)
    run.write_json("rollout.json", result)
    rows = rollout.table(result, spec)
    console.table(f"{run.path}: {steps}-step rollout from {result['forecasts']} start times of the {split} split (lead in time steps)", rows)
    console.print(f"saved {run.path / 'rollout.json'}; ember report {run.path} charts it")
    return rows
