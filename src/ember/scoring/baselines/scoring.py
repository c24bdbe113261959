"""Scoring the fitted baselines on a split, beside the model, through the model's own metrics.

A split is scored whole and in its own order on every process (never sharded): a sample's
position in the split is what pairs it with its valid time (`splits.times[split][k]`, contract
C2), and sums over identical shares need no reduction across processes (torchmetrics' sync is
off for these metrics). The climatology of each batch's times is the reference of the anomaly
correlation (`acc`), as in WeatherBench 2.
"""

from collections.abc import Callable

import numpy as np
import torch

from ember.scoring.baselines import linear, quantile
from ember.scoring.baselines.extremes import Distribution
from ember.scoring.baselines.fitting import Fitted, batches, bias_correction
from ember.scoring.metrics import build_metrics
from ember.scoring.units import physical_targets, raw_inputs


def predict(fitted: Fitted, name: str, x: torch.Tensor, split: str, lo: int, n: int, sim_q=None) -> torch.Tensor:
    """Baseline `name`'s predictions for samples lo.. of a split of n samples from their
    standardized inputs `x`: physical units (regression), one-hot scores (classification)."""
    spec, b = fitted.spec, len(x)
    shape = tuple(spec.target_shape)
    if name == "majority":
        return torch.nn.functional.one_hot(
            torch.full((b,), fitted.majority, dtype=torch.long, device=x.device), spec.num_classes
        ).float()
    if name == "mean":
        return fitted.mean.to(x.device).expand(b, *shape)
    if name == "climatology":
        return fitted.climatology_rows(split, lo, lo + b, n).to(x.device)
    if name == "linear":
        out = linear.predict(x.double().cpu().numpy(), fitted.weights)
        return torch.from_numpy(out).to(x.device).reshape(b, *shape)
    raw = raw_inputs(x.double(), spec)[:, spec.identity_channels]
    if name in ("persistence", "identity"):
        return raw
    model = raw.reshape(b, -1)
    if name == "linear_scaling":
        s = fitted.shift.to(x.device)[torch.from_numpy(fitted.months(split, lo, lo + b)).to(x.device)]
        out = torch.where(fitted.ratio.to(x.device), model * s, model + s)
    elif name == "quantile_mapping":
        out = fitted.qmap(model)
    elif name == "quantile_delta_mapping":
        out = fitted.qmap.delta(model, sim_q)
    else:
        raise ValueError(f"unknown baseline {name!r}")
    return out.reshape(b, *shape)


def predictors(fitted: Fitted, split: str, data, only: str | None = None) -> dict:
    """name -> a function of the next batch of standardized inputs of `split` (`data`, read
    whole and in order from its start), returning that baseline's predictions; regression only
    (the report maps their errors per grid point)."""
    if fitted.spec.task != "regression":
        return {}
    names = [name for name in fitted.names if only is None or name == only]
    sim_q = split_quantiles(fitted, data) if "quantile_delta_mapping" in names else None

    def one(name: str):
        cursor = {"lo": 0}

        def run(x: torch.Tensor) -> torch.Tensor:
            lo = cursor["lo"]
            cursor["lo"] = lo + len(x)
            return predict(fitted, name, x, split, lo, len(data), sim_q)

        return run

    return {name: one(name) for name in names}


def _metrics(fitted: Fitted, device) -> dict:
    out = {}
    for name in fitted.names:
        m = build_metrics(fitted.spec, fitted.mean if fitted.spec.task == "regression" else None).to(device)
        # Every process scores the whole split: nothing to sum across them.
        m.sync_on_compute, m._to_sync = False, False
        out[name] = m
    return out


def split_quantiles(fitted: Fitted, data) -> torch.Tensor:
    """(points, levels) quantiles of a split's own uncorrected values, for quantile delta mapping."""
    spec, parts = fitted.spec, []
    for _, x, _ in batches(data):
        parts.append(raw_inputs(x.double().cpu(), spec)[:, spec.identity_channels].reshape(len(x), -1).numpy())
    values = np.concatenate(parts)
    return torch.from_numpy(np.ascontiguousarray(quantile.nan_quantiles(values, quantile.levels_for(len(values))).T))


def score(data, fitted: Fitted, split: str, device: torch.device | str = "cpu", model=None) -> tuple[dict, dict]:
    """Each baseline's metrics on a whole split, `({baseline: {metric: value}}, extra)`; with
    `model` (a function of a batch of standardized inputs, physical outputs), `extra` holds its
    distribution scores (bias correction: percentiles, wet days)."""
    if data is None or not fitted.names:
        return {}, {}
    spec, n = fitted.spec, len(data)
    metrics = _metrics(fitted, device)
    regression = spec.task == "regression"
    dist = Distribution(spec, n) if regression and bias_correction(spec) else None
    sim_q = split_quantiles(fitted, data) if "quantile_delta_mapping" in fitted.names else None
    for lo, x, y in batches(data):
        x, y = x.to(device), y.to(device)
        true = physical_targets(y.double(), spec) if regression else y
        clim = (
            fitted.climatology_rows(split, lo, lo + len(x), n).to(device)
            if regression and fitted.mean is not None
            else None
        )
        if dist is not None:
            dist.add("observed", true)
            if model is not None:
                dist.add("model", model(x))
        for name, m in metrics.items():
            pred = predict(fitted, name, x, split, lo, n, sim_q)
            if not regression:
                m.update(pred, y)
                continue
            m.update(pred, true, standardized=False, climatology=clim)
            if dist is not None:
                dist.add(name, pred)
    scores = {name: defined(name, {k: float(v) for k, v in m.compute().items()}) for name, m in metrics.items()}
    extra = dist.scores() if dist is not None else {}
    for name, row in extra.items():
        if name in scores:
            scores[name].update(row)
    return scores, extra.get("model", {}) if model is not None else {}


def defined(name: str, metrics: dict[str, float]) -> dict[str, float]:
    """A baseline's metrics without those it has no value for: the climatology has no anomaly,
    so its anomaly correlation is undefined (not 0); one class has no top-5 (ties decide it)."""
    undefined = {"climatology": "acc", "mean": "acc", "majority": "top5"}.get(name)
    return {k: v for k, v in metrics.items() if k.split("/")[0] != undefined}


def batch_climatology(fitted, split: str | None, loader):
    """A function (batch number, batch size) -> the climatology of that batch's samples, for an
    unshuffled evaluation loader of `split` (its share of the split when sharded: the sampler's
    ranges say which rows); None where the climatology has no seasons or the times are unknown."""
    if not isinstance(fitted, Fitted) or fitted.table is None or split is None:
        return None
    sampler, n = getattr(loader, "sampler", None), len(getattr(loader, "data", ()))
    if sampler is None or getattr(sampler, "shuffle", False) or fitted.keys(split, n) is None:
        return None
    ranges = list(sampler.ranges()) if hasattr(sampler, "ranges") else None
    start = {"next": 0}

    def clim(i: int, size: int) -> torch.Tensor:
        lo = ranges[i][0] if ranges else start["next"]
        start["next"] = lo + size
        return fitted.climatology_rows(split, lo, lo + size, n)

    return clim


def model_predictor(forward, spec) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trained model as a function of standardized inputs returning physical predictions
    shaped as the targets; `forward(x)`: its raw outputs on a batch as evaluation computes them
    (ember.train.evaluator.Evaluator.forward: device, precision, the tested weights)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        return physical_targets(forward(x).double().reshape(len(x), *spec.target_shape), spec)

    return run


def score_run(fitted, data: dict, device, model: Callable | None = None) -> tuple[dict, dict]:
    """Every baseline on the held-out splits, `({baseline: {split/metric: v}}, {split/metric: v})`.
    `fitted`: the baselines fitted on the train split (baselines.reference); `data`: split name
    (val, test) -> its data; `model` (model_predictor): scored beside the baselines where they
    correct biases, its distribution's scores the second result."""
    base: dict[str, dict[str, float]] = {}
    extra: dict[str, float] = {}
    if not isinstance(fitted, Fitted):
        return base, extra
    model = model if bias_correction(fitted.spec) else None
    for split, split_data in data.items():
        scores, mine = score(split_data, fitted, split, device, model)
        for name, m in scores.items():
            base.setdefault(name, {}).update({f"{split}/{k}": v for k, v in m.items()})
        extra.update({f"{split}/{k}": v for k, v in mine.items()})
    return base, extra
