"""`ember eval run=DIR rollout=N`: a forecasting run rolled out N steps autoregressively.

A model trained to forecast its own state `data.lead` steps ahead is applied to its own forecast
again and again, as a weather model is: from every start time of the split with N * lead steps of
record after it, forecast k * lead steps ahead for k = 1..N and score each lead time against the
truth read from the file, beside the two references every forecaster quotes, persistence (the
start state, held) and the train split's climatology at each forecast's valid time (seasonal, the
reference of the anomaly correlation too). RMSE (latitude-weighted where the grid has
latitudes) and the anomaly correlation per lead time, per variable, in physical units.
"""

import numpy as np
import torch

from ember.data.cf import time_index
from ember.errors import ConfigError
from ember.scoring import baselines
from ember.scoring.metrics import build_metrics
from ember.scoring.units import Normalized

PREDICTORS = ("model", "persistence", "climatology")


def check(spec, reader, steps: int) -> None:
    """A one-line error unless this run can be rolled out `steps` times."""
    if steps < 1:
        raise ConfigError(f"rollout={steps} must be a number of steps of 1 or more")
    if reader is None or not hasattr(reader, "x_times"):
        raise ConfigError(
            "rollout= works on runs of data=gridded trained with data.lead=N (a forecast of the state N steps ahead)"
        )
    if not spec.lead:
        raise ConfigError(
            "rollout= needs a forecasting run (trained with data.lead=N): this run maps inputs to other targets, "
            "so its output cannot be fed back"
        )
    full_state = spec.identity_channels is not None and sorted(spec.identity_channels) == list(
        range(spec.input_shape[0] - int(spec.mask_channel))
    )
    keys = getattr(reader, "keys", {})
    if not full_state or keys.get("inputs", (None,))[0] != keys.get("targets", (None,))[0]:
        raise ConfigError(
            "rollout= needs a run that forecasts every input variable from the same dataset (data.lead without "
            "data.target or data.target_path): its forecast must be its next input"
        )


def rollout(model, splits, spec, split: str, steps: int, batch_size: int = 64) -> dict:
    """{predictor: [{metric: value} for k in 1..steps]} plus the lead of each step and the count
    of forecasts; every forecast starts from a sample of `split`."""
    data = splits.get(split)
    reader = getattr(data, "reader", None)
    check(spec, reader, steps)
    times = reader.x_times[data.rows]
    n_times = reader.dataset("inputs").sizes[reader.time_dim]
    starts = times[times + steps * spec.lead < n_times]
    if len(starts) == 0:
        raise ConfigError(
            f"no start time of the {split} split has {steps} x {spec.lead} steps of record after it; "
            "use a smaller rollout="
        )
    fitted = baselines.fit(splits)
    clim = _climatology(fitted, reader)
    scores = {p: [build_metrics(spec, fitted.mean.float()) for _ in range(steps)] for p in PREDICTORS}
    net = Normalized(model, spec).eval()  # raw inputs in, physical forecasts out
    order = torch.tensor(spec.identity_channels)
    with torch.inference_mode():
        for lo in range(0, len(starts), batch_size):
            t0 = starts[lo : lo + batch_size]
            state = torch.from_numpy(_inputs(reader, t0)).float()
            persistence = state[:, order]
            for k in range(steps):
                forecast = net(state)
                valid = t0 + (k + 1) * spec.lead
                truth = torch.from_numpy(reader.fields("targets", reader.y_layout, valid)).float()
                reference = clim(valid).float()  # the seasonal climatology at each forecast's valid time
                for name, pred in (("model", forecast), ("persistence", persistence), ("climatology", reference)):
                    scores[name][k].update(pred, truth, standardized=False, climatology=reference)
                state = state.clone()
                state[:, order] = forecast.reshape(truth.shape)
    return {
        "split": split,
        "forecasts": len(starts),
        "lead": [int((k + 1) * spec.lead) for k in range(steps)],
        "scores": {
            name: [baselines.defined(name, {m: float(v) for m, v in s.compute().items()}) for s in per_step]
            for name, per_step in scores.items()
        },
    }


def _inputs(reader, t0: np.ndarray) -> np.ndarray:
    """Raw input fields at file times `t0`, with the mask channel where the run has one."""
    x = reader.fields("inputs", reader.x_layout, t0)
    if getattr(reader, "mask_field", None) is not None:
        x = np.concatenate(
            [x, np.broadcast_to(reader.mask_field, (len(x), *reader.mask_field.shape)).astype(x.dtype)], axis=1
        )
    return x


def _climatology(fitted, reader):
    """A function of file time indices -> the train climatology at those valid times (the
    all-time mean where the file has no time coordinate or the climatology no seasons)."""
    index = time_index(reader.dataset("targets"), reader.time_dim)

    def at(valid: np.ndarray) -> torch.Tensor:
        return (
            fitted.at_times(index[valid]) if index is not None else fitted.mean.expand(len(valid), *fitted.mean.shape)
        )

    return at


def table(result: dict, spec) -> dict[str, float]:
    """Console.table rows: `predictor/lead L metric`, RMSE and ACC per variable (latitude-weighted
    RMSE where the grid has latitudes)."""
    names = [spec.target_name(c) for c in range(spec.target_channels)]
    first = result["scores"]["model"][0]
    rmse = "wrmse" if any(k.startswith("wrmse") for k in first) else "rmse"
    keys = [f"{m}/{n}" if len(names) > 1 else m for m in (rmse, "acc") for n in names]
    rows = {}
    for i, lead in enumerate(result["lead"]):
        for name in PREDICTORS:
            for key in keys:
                value = result["scores"][name][i].get(key)
                if value is not None and np.isfinite(value):
                    rows[f"{name}/lead {lead} {key}"] = value
    return rows
