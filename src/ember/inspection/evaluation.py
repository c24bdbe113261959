"""`ember eval`: a run's best checkpoint evaluated on a split beside its baselines, or a
forecasting run rolled out with `rollout=N`. (The run itself is read back by ember.rundir.loading.load_run.)"""

import dataclasses
from pathlib import Path

from omegaconf import OmegaConf
from torch import nn

from ember.config import compose_typed
from ember.data import Splits, build_data
from ember.data.spec import DataSpec
from ember.errors import ConfigError, EmberError, describe
from ember.rundir.directory import RunDir
from ember.rundir.loading import load_run
from ember.scoring import baselines, rollout
from ember.track.console import Console
from ember.train.build import build_evaluator_here
from ember.train.device import restored_torch_flags
from ember.train.evaluator import Evaluator


def evaluate_run(
    path: str | Path, overrides: list[str] = (), console: Console | None = None, rollout: int = 0
) -> dict[str, float]:
    """Evaluate a run's best checkpoint on `data.split` (default test) beside its baselines and
    print the metrics; with `rollout=N` (a forecasting run), roll it out N steps instead."""
    run = RunDir.open(path)
    model, run_cfg, spec = load_run(path)
    cfg, conf = compose_typed(overrides, saved=run_cfg)
    conf.data.shuffle = False  # data.split=train too is read in order, so its samples pair with their times
    # In the run's own units: data with other settings (data.resolution=1024 for a model trained
    # at 256) would otherwise be standardized with its own train split's statistics.
    splits = build_data(conf.data, stats_from=spec)
    spec = splits.spec  # the run's units, the data's shapes (its grid may be finer)
    split = conf.data.split
    if splits.get(split) is None:
        raise ConfigError(f"this run's data has no {split} split; use data.split=train, val or test")
    console = console or Console("lines")
    if rollout:
        return _rollout(run, model, splits, spec, split, rollout, console)
    with restored_torch_flags():
        evaluator, loaders = build_evaluator_here(conf, model, splits, lambda line: console.print(f"note: {line}"))
        evaluator.reference = _reference(run_cfg, cfg, spec, splits, evaluator.reference, console)
        loader = dict(zip(("train", "val", "test"), loaders))[split]
        metrics = {f"{split}/{k}": v for k, v in evaluator.evaluate(loader, split).items()}
        base, extra = ({}, {}) if evaluator.own_loss else _baselines(evaluator, splits.get(split), split)
    metrics.update({f"{split}/{k}": v for k, v in extra.items()})
    base = {name: {f"{split}/{k}": v for k, v in m.items()} for name, m in base.items()}
    verdict = baselines.verdict(metrics, base, spec, split)
    if verdict and "skill" in verdict:
        metrics[f"{split}/skill"] = verdict["skill"]
    notes = baselines.lines(evaluator.reference)
    baselines.show(console, f"{run.path}: best checkpoint", metrics, base, verdict, spec, notes)
    return metrics


def _reference(run_cfg, cfg, spec: DataSpec, splits: Splits, own, console: Console):
    """The baselines fitted on the run's own train split, to score on `splits` (a new file or
    period given as data overrides); the new data's own train split where the run's data is
    the same or cannot be read any more (said in one line)."""
    old, new = (OmegaConf.to_container(c.data, resolve=True) for c in (run_cfg, cfg))
    for key in ("split", "shuffle"):  # which split is scored, and in what order, is not other data
        old.pop(key, None), new.pop(key, None)
    if old == new or not isinstance(own, baselines.Fitted):
        return own
    try:
        theirs = build_data(run_cfg.data, stats_from=spec)
    except EmberError as e:
        console.print(
            f"baselines: fitted on this data's own train split: the run's data cannot be read ({describe(e)})"
        )
        return own
    if (theirs.spec.input_shape, theirs.spec.target_shape) != (spec.input_shape, spec.target_shape):
        return own  # another grid (data.resolution): the run's baselines cannot predict on it
    fitted = baselines.fit(theirs, qdm="quantile_delta_mapping" in own.names)
    console.print("baselines: fitted on the run's own train split, scored on this data")
    return dataclasses.replace(fitted, times=splits.times, _keys={})


def _baselines(evaluator: Evaluator, data, split: str) -> tuple[dict, dict]:
    """The baselines (fitted on this data's train split) scored on the whole of `split`, and the
    model's distribution scores beside theirs where it corrects a bias."""
    model = None
    if baselines.bias_correction(evaluator.spec):
        model = baselines.model_predictor(evaluator.forward, evaluator.spec)
    return baselines.score(data, evaluator.reference, split, evaluator.device, model)


def _rollout(
    run: RunDir, model: nn.Module, splits: Splits, spec: DataSpec, split: str, steps: int, console: Console
) -> dict[str, float]:
    """Roll a forecasting run out `steps` times; print the scores and keep them in rollout.json."""
    result = rollout.rollout(model, splits, spec, split, steps)
    run.write_json("rollout.json", result)
    rows = rollout.table(result, spec)
    console.table(
        f"{run.path}: {steps}-step rollout from {result['forecasts']} start times of the {split} split "
        "(lead in time steps)",
        rows,
    )
    console.print(f"saved {run.path / 'rollout.json'}; ember report {run.path} charts it")
    return rows
