"""`ember eval`: a run's best checkpoint evaluated on a split beside its baselines, or a
forecasting run rolled out with `rollout=N`. (The run itself is read back by ember.run.load_run.)"""

from pathlib import Path

from torch import nn

from ember import baselines, rollout
from ember.config import compose, typed
from ember.config.compose import config_as_overrides
from ember.data import Splits, build_data
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.run import RunDir, load_run
from ember.track.console import Console
from ember.train.build import build_trainer
from ember.train.device import restored_torch_flags


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
    result = rollout.rollout(model, splits, spec, split, steps)
    run.write_json("rollout.json", result)
    rows = rollout.table(result, spec)
    console.table(f"{run.path}: {steps}-step rollout from {result['forecasts']} start times of the {split} split (lead in time steps)", rows)
    console.print(f"saved {run.path / 'rollout.json'}; ember report {run.path} charts it")
    return rows
